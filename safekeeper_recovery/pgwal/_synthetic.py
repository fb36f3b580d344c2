"""Synthetic, well-formed PostgreSQL 15 WAL: XLOG_NOOP records of seeded lengths.

What it writes
--------------
From ``start_lsn`` to ``end_lsn``: page headers where pages start (the long one, with the
system id and segment size, on a segment's first page; XLP_FIRST_IS_CONTRECORD and
``xlp_rem_len`` when a record continues from the previous page) and XLOG_NOOP records with
a correct CRC32C, chained by ``xl_prev``. About half the records are small, a third a few
KiB, the rest 8 to 64 KiB, so records regularly continue across pages and segments.

Rules
-----
S1  ``start_lsn`` is 8-aligned, not inside a page header, and taken to be a record
    boundary: at a page start the page header comes first.
S2  The run ends at ``end_lsn``, a record boundary, the largest position no further than
    ``start_lsn + size`` that S3 allows. That is ``start_lsn + size`` itself whenever
    it is 8-aligned and either a page start or at least 48 (64 after a segment's long
    header) bytes into a page; otherwise at most a few dozen bytes less (0 when ``size``
    is too small for any record). ``size`` is the actual length.
S3  The last record of a non-empty run is a 24-byte "trailer" XLOG_NOOP lying wholly in
    the last 24 bytes before ``end_lsn`` (no page header in between). So a later run that
    continues at ``end_lsn`` knows the previous record started at ``end_lsn - 24``:
    :func:`continuation_prev_lsn`. This is what keeps ``xl_prev`` chained across runs
    (pg_waldump checks it between consecutive records); page-aligned runs would not help,
    since the chain goes on across pages.
S4  Content depends only on the constructor's arguments; :meth:`SyntheticWal.read` is
    random access (state checkpoints every 1 MiB of LSN space; the last 16 MiB generated are
    cached, twice a proposer's default window, so nodes at different positions share them).
S5  With ``clean_step`` (a multiple of the page size; 0 = off), every multiple of it
    strictly inside the run is a *clean point*: a trailer (S3) ends there, so a run cut
    there can be continued like one that ended there, and no record crosses it. Records
    between clean points are planned exactly as before the end of a run, so a run that ends
    at a clean point is a prefix of every longer run with the same arguments. The one
    exception: a clean point fewer than 48 usable bytes after ``start_lsn`` has no room for
    its trailer and is skipped. The proposer uses this (``continue_synthetic``) so that its
    WAL can be continued wherever a dead proposer's WAL was cut.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterator
from typing import Final, final

import attrs

from ..core import INVALID_LSN, XLOG_BLCKSZ, Lsn
from ._format import (
    MAXALIGN,
    MIN_RECORD_SIZE,
    PageHeader,
    maxalign,
    noop_record,
    page_header_size,
)

__all__ = [
    "DEFAULT_SYSTEM_ID",
    "TRAILER_SIZE",
    "SyntheticWal",
    "check_start_lsn",
    "continuation_prev_lsn",
    "usable_bytes",
    "validate_seg_size",
]

TRAILER_SIZE: Final = MIN_RECORD_SIZE
DEFAULT_SYSTEM_ID: Final = 7_000_000_000_000_000_001
_CHUNK: Final = 1024 * 1024
_CACHED_CHUNKS: Final = 16
_POOL_SIZE: Final = 256 * 1024
_MASK64: Final = (1 << 64) - 1
_MIN_SEG: Final = 1024 * 1024
_MAX_SEG: Final = 1024 * 1024 * 1024


def validate_seg_size(seg_size: int) -> int:
    """``seg_size`` if it is a power of two from 1 MiB to 1 GiB, else ``ValueError``."""
    if not _MIN_SEG <= seg_size <= _MAX_SEG or seg_size & (seg_size - 1):
        raise ValueError(f"segment size must be a power of two, 1 MiB to 1 GiB: {seg_size}")
    return seg_size


def check_start_lsn(start_lsn: int, seg_size: int) -> None:
    """Raise ``ValueError`` unless a record can start at ``start_lsn`` (S1): 8-aligned
    (MAXALIGN) and not inside a page header."""
    if start_lsn % MAXALIGN:
        raise ValueError(f"start LSN {Lsn(start_lsn)} is not 8-aligned (S1)")
    offset = start_lsn % XLOG_BLCKSZ
    if 0 < offset < page_header_size(start_lsn - offset, seg_size):
        raise ValueError(f"start LSN {Lsn(start_lsn)} lies inside a page header (S1)")


def continuation_prev_lsn(start_lsn: Lsn, timeline_start_lsn: Lsn) -> Lsn:
    """``xl_prev`` for a run starting at ``start_lsn`` (S3): 0 at the timeline's start,
    else the previous run's trailer at ``start_lsn - 24``."""
    if start_lsn <= timeline_start_lsn:
        return Lsn(0)
    return Lsn(start_lsn - TRAILER_SIZE)


def _multiples_between(lo: int, hi: int, step: int) -> int:
    """How many multiples of ``step`` lie in ``[lo, hi)``."""
    if hi <= lo:
        return 0
    return (hi - 1) // step - (lo - 1) // step if lo > 0 else (hi - 1) // step + 1


def usable_bytes(lo: int, hi: int, seg_size: int) -> int:
    """Bytes of ``[lo, hi)`` outside page headers, where a page header at ``lo`` itself is
    still to be written (``lo`` is never inside one)."""
    pages = _multiples_between(lo, hi, XLOG_BLCKSZ)
    segments = _multiples_between(lo, hi, seg_size)
    return (hi - lo) - 24 * pages - 16 * segments


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def _valid_length(tot_len: int) -> int:
    """The nearest length a NOOP record can have (25 and 282..284 cannot)."""
    if tot_len == 25:
        return 24
    if 282 <= tot_len <= 284:
        return 281
    return tot_len


@attrs.define
class _Cursor:
    """Where generation stands: everything needed to go on from ``lsn``."""

    lsn: int
    prev: int
    """Start of the previous record (the next record's ``xl_prev``)."""
    rng: int
    record_lsn: int = 0
    record_len: int = 0
    """``xl_tot_len`` of the record being written (0: between records)."""
    record_fill: int = 0
    record_prev: int = 0
    record_done: int = 0
    """Bytes of the record (padded) written so far."""

    def copy(self) -> _Cursor:
        return attrs.evolve(self)


@final
class SyntheticWal:
    """Valid PostgreSQL WAL from ``start_lsn``, about ``size`` bytes of it (rules S1-S4).

    ``read(offset, length)`` returns bytes ``start_lsn + offset ..`` like
    ``WalGenerator.read``; ``size`` and ``end_lsn`` are the rounded extent (S2).
    Raises ``ValueError`` for a ``start_lsn`` that breaks S1 or a bad segment size.
    """

    def __init__(
        self,
        seed: int,
        start_lsn: Lsn,
        size: int,
        *,
        seg_size: int = 16 * 1024 * 1024,
        system_id: int = DEFAULT_SYSTEM_ID,
        timeline: int = 1,
        prev_lsn: Lsn = INVALID_LSN,
        clean_step: int = 0,
    ) -> None:
        validate_seg_size(seg_size)
        if clean_step < 0 or clean_step % XLOG_BLCKSZ:
            raise ValueError(f"clean step must be a multiple of the page size: {clean_step}")
        if size < 0:
            raise ValueError(f"size must not be negative: {size}")
        check_start_lsn(start_lsn, seg_size)
        if prev_lsn >= start_lsn and start_lsn > 0:
            raise ValueError(f"prev LSN {prev_lsn} is not before the start {start_lsn}")
        self.seed = seed
        self.start_lsn = Lsn(start_lsn)
        self.seg_size = seg_size
        self.system_id = system_id
        self.timeline = timeline
        self.prev_lsn = Lsn(prev_lsn)
        self.clean_step = clean_step
        end = int(start_lsn) + size
        self.end_lsn = self._round_end(end - end % MAXALIGN)
        self.size = int(self.end_lsn) - int(self.start_lsn)
        self._body_end = int(self.end_lsn) - TRAILER_SIZE if self.size else int(self.start_lsn)
        self._pool = random.Random(f"pgwal:{seed}").randbytes(_POOL_SIZE)
        first = _Cursor(int(start_lsn), int(prev_lsn), _splitmix64(seed & _MASK64)[1])
        self._checkpoints: dict[int, _Cursor] = {self._chunk_of(int(start_lsn)): first}
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def __repr__(self) -> str:
        return (
            f"SyntheticWal(seed={self.seed}, {self.start_lsn}..{self.end_lsn}, "
            f"seg_size={self.seg_size}, system_id={self.system_id}, "
            f"clean_step={self.clean_step})"
        )

    # ---- clean points (S5) ----------------------------------------------------------------

    def _uses_clean_point(self, point: int) -> bool:
        """Is ``point`` (a multiple of ``clean_step``) a clean point of this run's layout
        (whatever its end): after the start, with room for its trailer (S5)?"""
        body_end = point - TRAILER_SIZE
        if body_end < self.start_lsn:
            return False
        free = usable_bytes(int(self.start_lsn), body_end, self.seg_size)
        return free == 0 or free >= MIN_RECORD_SIZE

    def _next_clean_point(self, lsn: int) -> int | None:
        """The first clean point whose trailer starts at or after ``lsn`` (None: S5 off)."""
        step = self.clean_step
        if not step:
            return None
        point = -(-(lsn + TRAILER_SIZE) // step) * step
        while not self._uses_clean_point(point):
            point += step
        return point

    def _last_clean_point(self, lsn: int) -> int:
        """The last clean point at or before ``lsn``, else the run's start."""
        step = self.clean_step
        if step:
            point = lsn - lsn % step
            while point > self.start_lsn:
                if self._uses_clean_point(point):
                    return point
                point -= step
        return int(self.start_lsn)

    # ---- extent ---------------------------------------------------------------------------

    def _end_ok(self, end: int) -> bool:
        start = int(self.start_lsn)
        if end == start:
            return True
        body_end = end - TRAILER_SIZE
        if body_end < start:
            return False
        offset = end % XLOG_BLCKSZ
        if offset:
            page = end - offset
            if offset - TRAILER_SIZE < page_header_size(page, self.seg_size):
                return False
        # S5: the end's trailer must not overlap a clean point's, and the last stretch
        # since a clean point must hold whole records.
        upcoming = self._next_clean_point(body_end)
        if upcoming is not None and upcoming - TRAILER_SIZE < end < upcoming:
            return False
        block = self._last_clean_point(end - 1)
        if body_end < block:
            return False
        free = usable_bytes(block, body_end, self.seg_size)
        return free == 0 or free >= MIN_RECORD_SIZE

    def _round_end(self, end: int) -> Lsn:
        while end > self.start_lsn and not self._end_ok(end):
            end -= MAXALIGN
        return Lsn(max(end, int(self.start_lsn)))

    def record_boundary(self, lsn: Lsn) -> tuple[Lsn, Lsn]:
        """``(at, prev)``: the first position ``at >= lsn`` where a record of this run starts
        (or its end, if none does), and the start of the record before it (``xl_prev`` of a
        record at ``at``). So WAL of this run cut at ``lsn`` becomes whole again by
        appending this run's bytes ``lsn .. at``. ``lsn`` must lie within the run."""
        if not self.start_lsn <= lsn <= self.end_lsn:
            raise ValueError(f"{lsn} is outside the run {self.start_lsn}..{self.end_lsn}")
        prev = self.prev_lsn
        for record_lsn, _ in self.record_lsns():
            if record_lsn >= lsn:
                return record_lsn, prev
            prev = record_lsn
        return self.end_lsn, prev

    @property
    def last_record_lsn(self) -> Lsn | None:
        """Start of the trailer record (``None`` for an empty run)."""
        return Lsn(self.end_lsn - TRAILER_SIZE) if self.size else None

    # ---- reading --------------------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        """Bytes ``offset .. offset + length`` of the run; ``ValueError`` outside it."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(
                f"read of {length} bytes at {offset} outside the stream of {self.size} bytes"
            )
        parts: list[bytes] = []
        pos, stop = int(self.start_lsn) + offset, int(self.start_lsn) + offset + length
        while pos < stop:
            index = self._chunk_of(pos)
            chunk = self._chunk(index)
            base = max(index * _CHUNK, int(self.start_lsn))
            take = min(stop, base + len(chunk)) - pos
            parts.append(chunk[pos - base : pos - base + take])
            pos += take
        return b"".join(parts)

    def record_lsns(self) -> Iterator[tuple[Lsn, int]]:
        """``(start, xl_tot_len)`` of every record, in order (regenerates the run)."""
        cursor = self._checkpoints[self._chunk_of(int(self.start_lsn))].copy()
        found: list[tuple[Lsn, int]] = []
        while cursor.lsn < self.end_lsn:
            self._generate(cursor, min(int(self.end_lsn), cursor.lsn + _CHUNK), found)
            yield from found
            found.clear()

    @staticmethod
    def _chunk_of(lsn: int) -> int:
        return lsn // _CHUNK

    def _chunk(self, index: int) -> bytes:
        data = self._cache.get(index)
        if data is not None:
            self._cache.move_to_end(index)
            return data
        known = max(i for i in self._checkpoints if i <= index)
        cursor = self._checkpoints[known].copy()
        for i in range(known, index + 1):
            stop = min(int(self.end_lsn), (i + 1) * _CHUNK)
            data = self._generate(cursor, stop, None)
            self._checkpoints.setdefault(i + 1, cursor.copy())
            self._cache[i] = data
            if len(self._cache) > _CACHED_CHUNKS:
                self._cache.popitem(last=False)
        assert data is not None
        return data

    # ---- generation -----------------------------------------------------------------------

    def _generate(
        self, c: _Cursor, stop: int, found: list[tuple[Lsn, int]] | None
    ) -> bytes:
        """Advance ``c`` to ``stop``, returning the bytes in between (S1-S3)."""
        out = bytearray()
        seg = self.seg_size
        record = b""
        if c.record_len:
            record = self._record_bytes(c)
        while c.lsn < stop:
            offset = c.lsn % XLOG_BLCKSZ
            if offset == 0:
                # Padding never crosses a page (pages end 8-aligned), so a record in
                # progress here still lacks data bytes: xlp_rem_len > 0.
                rem = c.record_len - c.record_done if c.record_len else 0
                assert rem >= 0, "S1: a page starts inside a record's padding"
                header = PageHeader.build(
                    c.lsn, seg_size=seg, sysid=self.system_id, tli=self.timeline, rem_len=rem
                ).encode()
                out += header
                c.lsn += len(header)
                continue
            if not c.record_len:
                self._plan_record(c)
                record = self._record_bytes(c)
                if found is not None:
                    found.append((Lsn(c.record_lsn), c.record_len))
            padded = maxalign(c.record_len)
            take = min(padded - c.record_done, XLOG_BLCKSZ - offset, stop - c.lsn)
            out += record[c.record_done : c.record_done + take]
            c.record_done += take
            c.lsn += take
            if c.record_done == padded:
                c.prev = c.record_lsn
                c.record_len = 0
                c.record_done = 0
        return bytes(out)

    def _plan_record(self, c: _Cursor) -> None:
        """Choose the next record at ``c.lsn``: seeded, unless the end is near (S2, S3)."""
        c.record_lsn = c.lsn
        c.record_prev = c.prev
        c.record_done = 0
        if c.lsn >= self._body_end:
            c.record_len, c.record_fill = TRAILER_SIZE, 0
            return
        body_end = self._body_end
        point = self._next_clean_point(c.lsn)
        if point is not None and point < self.end_lsn:
            body_end = point - TRAILER_SIZE
        if c.lsn >= body_end:  # S5: the trailer that ends at a clean point
            c.record_len, c.record_fill = TRAILER_SIZE, 0
            return
        c.rng, r = _splitmix64(c.rng)
        kind, bits = r % 100, r >> 8
        if kind < 55:
            want = 24 + bits % 400
        elif kind < 90:
            want = 300 + bits % 7900
        else:
            want = 8192 + bits % (56 * 1024)
        want = _valid_length(want)
        free = usable_bytes(c.lsn, body_end, self.seg_size)
        if free - maxalign(want) < MIN_RECORD_SIZE:
            want = free  # the last body record fills the rest exactly (a multiple of 8)
        c.record_len = want
        c.record_fill = (r >> 40) % (_POOL_SIZE - want)

    def _record_bytes(self, c: _Cursor) -> bytes:
        fill = self._pool[c.record_fill : c.record_fill + c.record_len]
        record = noop_record(c.record_len, Lsn(c.record_prev), fill)
        return record + bytes(maxalign(len(record)) - len(record))
