"""A streaming PostgreSQL WAL reader that checks every page header and record (pure).

Theory of operation
-------------------
Feed WAL bytes in order from ``start_lsn`` (a record boundary, or a page start: W5);
:meth:`WalReader.feed` returns the records completed so far and stops for good at the
first corruption or at the end of the written WAL. Nothing is buffered beyond one page
header or one record header: record bodies are checksummed as they stream past (CRC32C
of the body first, the header last, as PostgreSQL does), so a record of any size costs
constant memory.

Rules (the ``kind`` of a :class:`Corruption`)
---------------------------------------------
W1  Page header (at every 8 KiB page start): magic 0xD110 (``page magic``); no info bits
    beyond XLP_ALL_FLAGS (``page info``); the long header exactly on a segment's first
    page (``long header``) with our segment size, 8 KiB pages and one system id throughout
    (``segment size``, ``block size``, ``system id``); ``xlp_pageaddr`` is the page's LSN
    (``page address``); one timeline throughout (``timeline``); zero padding (``page
    padding``). XLP_FIRST_IS_CONTRECORD is set exactly when ``xlp_rem_len`` > 0
    (``continuation``), only while a record is in progress, and ``xlp_rem_len`` is what
    that record still lacks (``continuation``).
W2  Record header: 24 <= ``xl_tot_len`` <= 1 GiB - 1 (``record length``); a known
    resource manager id (``resource manager``); ``xl_prev`` is the previous record's start,
    or for the first record before it (``prev link``).
W3  The record's CRC32C matches ``xl_crc`` (``crc``); the bytes up to the next 8-byte
    boundary are zero, as PostgreSQL leaves them (``padding``). After an XLOG_SWITCH
    record the rest of the segment is skipped, as PostgreSQL does.
W4  End of WAL is not corruption: an ``xl_tot_len`` of 0 or an all-zero page header where
    a record would start (``zeros``), or the data simply ending (``end of data``, or
    ``incomplete`` when it ends inside a record or header). Whoever knows where the WAL
    should end decides what an early end means (:class:`~._verify.WalVerifier` does).
W5  A leading continuation is skipped, as pg_waldump does (``XLogFindNextRecord``): when
    reading starts at a page start whose header continues a record from before the start
    (a timeline that starts at a segment start usually does), its ``xlp_rem_len`` bytes
    (across pages, each page header continuing it with the right ``xlp_rem_len``,
    ``continuation``) belong to a record we cannot check, and the first record starts at
    the next 8-byte boundary after them. :attr:`WalReader.leading_continuation` reports it.

Where a corruption is reported: ``lsn`` is the record being read when it was found (its
start), or the page header's LSN when the page header itself is wrong between records;
``at`` is the LSN of the offending structure or byte.
"""

from __future__ import annotations

import struct
from typing import Final, Literal, final

import attrs
import crc32c as _crc32c

from ..core import XLOG_BLCKSZ, Lsn
from ._format import (
    LONG_PAGE_HEADER_SIZE,
    PG15_PAGE_MAGIC,
    RECORD_HEADER_SIZE,
    SHORT_PAGE_HEADER_SIZE,
    XLP_ALL_FLAGS,
    XLP_FIRST_IS_CONTRECORD,
    XLP_LONG_HEADER,
    PageHeader,
    RecordHeader,
    maxalign,
)
from ._synthetic import validate_seg_size

__all__ = [
    "MAX_RECORD_SIZE",
    "Corruption",
    "EndReason",
    "LeadingContinuation",
    "WalEnd",
    "WalReader",
    "WalRecord",
]

MAX_RECORD_SIZE: Final = 0x3FFF_FFFF
"""PostgreSQL cannot allocate a record buffer larger than this (MaxAllocSize)."""
RM_MAX_BUILTIN_ID: Final = 21
RM_MIN_CUSTOM_ID: Final = 128
_CRC_OFFSET: Final = 20
_U32: Final = struct.Struct("<I")
_COMPACT_AT: Final = 1024 * 1024

EndReason = Literal["end of data", "zeros", "incomplete"]


@final
@attrs.frozen
class WalRecord:
    """A record that passed every check: its start, ``xl_tot_len`` and header."""

    lsn: Lsn
    next_lsn: Lsn
    """Where the next record starts (after padding; after an XLOG_SWITCH, the next
    segment)."""
    header: RecordHeader


@final
@attrs.frozen
class Corruption:
    """The first thing found wrong (see the module docstring for ``lsn`` versus ``at``)."""

    lsn: Lsn
    at: Lsn
    kind: str
    message: str

    def __str__(self) -> str:
        where = f"record at {self.lsn}" if self.lsn == self.at else f"{self.lsn} (at {self.at})"
        return f"{self.kind}: {where}: {self.message}"


@final
@attrs.frozen
class WalEnd:
    """Why reading stopped without corruption (W4); ``lsn`` is where, ``record_lsn`` the
    start of a record cut short (``incomplete`` or ``zeros`` inside a record)."""

    reason: EndReason
    lsn: Lsn
    record_lsn: Lsn | None = None


@final
@attrs.frozen
class LeadingContinuation:
    """W5: the tail of a record that began before the start, skipped unchecked.

    ``lsn`` is the start (a page start), ``length`` the page's ``xlp_rem_len`` (the
    record's bytes still to come there), ``next_lsn`` where the first record starts.
    """

    lsn: Lsn
    length: int
    next_lsn: Lsn


@attrs.define
class _Partial:
    lsn: int
    tot_len: int
    got: int = 0
    header: bytearray = attrs.Factory(bytearray)
    crc: int = 0


class _Stop(Exception):
    """Internal: the reader found a corruption (already recorded)."""


@final
class WalReader:
    """Check WAL fed in order from ``start_lsn`` (rules W1-W5).

    ``system_id``/``timeline``: expected values (``None``: whatever the first page says).
    ``prev_lsn``: the start of the record before ``start_lsn`` if known (``None``: the first
    record's ``xl_prev`` need only lie before it). ``ValueError`` for an unaligned start.
    """

    def __init__(
        self,
        start_lsn: Lsn,
        seg_size: int,
        *,
        system_id: int | None = None,
        timeline: int | None = None,
        prev_lsn: Lsn | None = None,
    ) -> None:
        validate_seg_size(seg_size)
        if start_lsn % 8:
            raise ValueError(f"WAL reading starts at a record boundary, not at {start_lsn}")
        self.start_lsn = Lsn(start_lsn)
        self.seg_size = seg_size
        self.records = 0
        self.last_record_lsn: Lsn | None = None
        self.end_lsn = Lsn(start_lsn)
        """Where the record after the last valid one starts."""
        self.corruption: Corruption | None = None
        self.end: WalEnd | None = None
        self.leading_continuation: LeadingContinuation | None = None
        """W5: the leading continuation skipped, once it has been (``None`` until then)."""
        self._system_id = system_id
        self._timeline = timeline
        self._prev: int | None = None if prev_lsn is None else int(prev_lsn)
        self._buf = bytearray()
        self._off = 0
        self._pos = int(start_lsn)
        self._page_checked = -1
        self._rec: _Partial | None = None
        self._done: WalRecord | None = None
        self._skip_to: int | None = None
        self._cont_left: int | None = None
        """W5: bytes of the leading continuation still to skip."""
        self._cont_total = 0

    @property
    def position(self) -> Lsn:
        """How far the bytes fed so far have been examined."""
        return Lsn(self._pos)

    @property
    def stopped(self) -> bool:
        """A corruption or the end of the written WAL was found; more data is ignored."""
        return self.corruption is not None or self.end is not None

    def feed(self, data: bytes | bytearray | memoryview) -> list[WalRecord]:
        """Examine the next bytes; return the records they completed (none once stopped)."""
        if self.stopped:
            return []
        self._buf += data
        out: list[WalRecord] = []
        try:
            while not self.stopped and self._step(out):
                pass
        except _Stop:
            pass
        if self._off >= _COMPACT_AT:
            del self._buf[: self._off]
            self._off = 0
        return out

    def finish(self) -> WalEnd | Corruption:
        """No more data: the corruption found, or why and where reading ended (W4)."""
        if self.corruption is not None:
            return self.corruption
        if self.end is not None:
            return self.end
        rest = bytes(self._buf[self._off :])
        fed_to = Lsn(self._pos + len(rest))
        if self._done is not None:
            if any(rest):  # fewer padding bytes than the record needs, and not zero
                return self._corrupt(
                    "padding", "non-zero byte after the record's end", at=self._pos,
                    lsn=self._done.lsn,
                )
            self._emit_done([])  # the data ends inside the zero padding: the record is whole
        if self._rec is not None:
            self.end = WalEnd("incomplete", fed_to, Lsn(self._rec.lsn))
        elif self._cont_left is not None:  # inside the leading continuation (W5)
            self.end = WalEnd("incomplete", fed_to)
        elif any(rest):
            self.end = WalEnd("incomplete", fed_to, Lsn(self._pos))
        elif rest:
            self.end = WalEnd("zeros", Lsn(self._pos))
        else:
            self.end = WalEnd("end of data", fed_to)
        return self.end

    # ---- the state machine ----------------------------------------------------------------

    def _avail(self) -> int:
        return len(self._buf) - self._off

    def _take(self, n: int) -> bytes:
        piece = bytes(self._buf[self._off : self._off + n])
        self._off += n
        self._pos += n
        return piece

    def _corrupt(self, kind: str, message: str, *, at: int, lsn: int | None = None) -> Corruption:
        """Record the corruption: in the record being read, else at ``at``."""
        if lsn is None:
            lsn = self._rec.lsn if self._rec is not None else at
        self.corruption = Corruption(Lsn(lsn), Lsn(at), kind, message)
        return self.corruption

    def _fail(self, kind: str, message: str, *, at: int, lsn: int | None = None) -> _Stop:
        self._corrupt(kind, message, at=at, lsn=lsn)
        return _Stop()

    def _step(self, out: list[WalRecord]) -> bool:
        """Advance one unit; False when more data is needed."""
        if self._skip_to is not None:
            n = min(self._skip_to - self._pos, self._avail())
            if n == 0:
                return False
            self._take(n)
            if self._pos == self._skip_to:
                self._skip_to = None
            return True
        if self._done is not None:
            return self._padding(out)
        if self._pos % XLOG_BLCKSZ == 0 and self._page_checked != self._pos:
            return self._page_header()
        if self._cont_left is not None:
            return self._skip_continuation()
        if self._rec is not None:
            return self._record_bytes()
        return self._record_start()

    def _page_header(self) -> bool:
        pos = self._pos
        if self._avail() < SHORT_PAGE_HEADER_SIZE:
            return False
        head = bytes(self._buf[self._off : self._off + SHORT_PAGE_HEADER_SIZE])
        if not any(head):
            in_record = self._rec.lsn if self._rec is not None else None
            self.end = WalEnd("zeros", Lsn(pos), None if in_record is None else Lsn(in_record))
            return False
        info = int.from_bytes(head[2:4], "little")
        expect_long = pos % self.seg_size == 0
        size = LONG_PAGE_HEADER_SIZE if expect_long or info & XLP_LONG_HEADER else len(head)
        if self._avail() < size:
            return False
        page_lsn = Lsn(pos)
        hdr = PageHeader.decode(self._take(size))
        if hdr.magic != PG15_PAGE_MAGIC:
            raise self._fail("page magic", f"page {page_lsn}: magic {hdr.magic:#06x}", at=pos)
        if hdr.info & ~XLP_ALL_FLAGS:
            raise self._fail("page info", f"page {page_lsn}: info bits {hdr.info:#06x}", at=pos)
        if bool(hdr.info & XLP_LONG_HEADER) != expect_long:
            what = "lacks the long header of a segment's first page" if expect_long else (
                "has a long header but does not start a segment"
            )
            raise self._fail("long header", f"page {page_lsn} {what}", at=pos)
        if hdr.is_long:
            self._check_long(hdr, pos)
        if hdr.pageaddr != pos:
            raise self._fail(
                "page address", f"page {page_lsn} says it is at {hdr.pageaddr}", at=pos
            )
        if self._timeline is None:
            self._timeline = hdr.tli
        elif hdr.tli != self._timeline:
            raise self._fail(
                "timeline", f"page {page_lsn}: timeline {hdr.tli}, not {self._timeline}", at=pos
            )
        if any(hdr.padding):
            raise self._fail("page padding", f"page {page_lsn}: padding is not zero", at=pos)
        self._check_continuation(hdr, pos)
        self._page_checked = pos
        return True

    def _check_long(self, hdr: PageHeader, pos: int) -> None:
        page = Lsn(pos)
        if hdr.seg_size != self.seg_size:
            raise self._fail(
                "segment size", f"page {page}: segment size {hdr.seg_size}, not {self.seg_size}",
                at=pos,
            )
        if hdr.blcksz != XLOG_BLCKSZ:
            raise self._fail("block size", f"page {page}: block size {hdr.blcksz}", at=pos)
        if self._system_id is None:
            self._system_id = hdr.sysid
        elif hdr.sysid != self._system_id:
            raise self._fail(
                "system id", f"page {page}: system id {hdr.sysid}, not {self._system_id}", at=pos
            )

    def _check_continuation(self, hdr: PageHeader, pos: int) -> None:
        page = Lsn(pos)
        flagged = bool(hdr.info & XLP_FIRST_IS_CONTRECORD)
        if flagged != (hdr.rem_len > 0):
            raise self._fail(
                "continuation",
                f"page {page}: continuation flag {'set' if flagged else 'clear'} with "
                f"xlp_rem_len {hdr.rem_len}",
                at=pos,
            )
        rec = self._rec
        if rec is None and self._cont_left is not None:  # W5, on a later page
            if not flagged or hdr.rem_len != self._cont_left:
                raise self._fail(
                    "continuation",
                    f"the leading continuation needs {self._cont_left} more bytes but page "
                    f"{page} continues {hdr.rem_len if flagged else 0}",
                    at=pos,
                )
            return
        if rec is None:
            if flagged and pos == self.start_lsn:  # W5: a record from before the start
                self._cont_left = self._cont_total = hdr.rem_len
                return
            if flagged:
                raise self._fail(
                    "continuation",
                    f"page {page} continues a record ({hdr.rem_len} bytes) where a new one "
                    "should start",
                    at=pos,
                )
            return
        missing = rec.tot_len - rec.got
        if not flagged:
            raise self._fail(
                "continuation",
                f"the record at {Lsn(rec.lsn)} needs {missing} more bytes but page {page} "
                "does not continue it",
                at=pos,
            )
        if hdr.rem_len != missing:
            raise self._fail(
                "continuation",
                f"page {page} continues {hdr.rem_len} bytes of the record at {Lsn(rec.lsn)}, "
                f"which lacks {missing}",
                at=pos,
            )

    def _skip_continuation(self) -> bool:
        """W5: pass over the leading continuation's bytes; the first record starts at the
        next 8-byte boundary after them (never across a page: pages are 8-aligned)."""
        left = self._cont_left
        assert left is not None, "W5: skipping outside a leading continuation"
        n = min(left, XLOG_BLCKSZ - self._pos % XLOG_BLCKSZ, self._avail())
        if n == 0:
            return False
        self._take(n)
        left -= n
        if left:
            self._cont_left = left
            return True
        self._cont_left = None
        first = maxalign(self._pos)
        self.leading_continuation = LeadingContinuation(
            self.start_lsn, self._cont_total, Lsn(first)
        )
        self.end_lsn = Lsn(first)
        if first > self._pos:
            self._skip_to = first
        return True

    def _record_start(self) -> bool:
        pos = self._pos
        if self._avail() < 4:
            return False
        (tot_len,) = _U32.unpack_from(self._buf, self._off)
        if tot_len == 0:
            self.end = WalEnd("zeros", Lsn(pos))
            return False
        if tot_len < RECORD_HEADER_SIZE or tot_len > MAX_RECORD_SIZE:
            raise self._fail("record length", f"xl_tot_len {tot_len}", at=pos, lsn=pos)
        self._rec = _Partial(pos, tot_len)
        return True

    def _record_bytes(self) -> bool:
        rec = self._rec
        assert rec is not None, "W2: reading a record's bytes outside a record"
        page_left = XLOG_BLCKSZ - self._pos % XLOG_BLCKSZ
        n = min(rec.tot_len - rec.got, page_left, self._avail())
        if n == 0:
            return False
        piece = self._take(n)
        if rec.got < RECORD_HEADER_SIZE:
            h = min(RECORD_HEADER_SIZE - rec.got, n)
            rec.header += piece[:h]
            piece = piece[h:]
            if len(rec.header) == RECORD_HEADER_SIZE:
                self._check_record_header(rec)
        rec.crc = _crc32c.crc32c(piece, rec.crc)
        rec.got += n
        if rec.got == rec.tot_len:
            self._complete(rec)
        return True

    def _check_record_header(self, rec: _Partial) -> None:
        hdr = RecordHeader.decode(rec.header)
        if RM_MAX_BUILTIN_ID < hdr.rmid < RM_MIN_CUSTOM_ID:
            raise self._fail("resource manager", f"xl_rmid {hdr.rmid}", at=rec.lsn)
        if self._prev is not None and hdr.prev != self._prev:
            raise self._fail(
                "prev link", f"xl_prev {hdr.prev}, the previous record is at {Lsn(self._prev)}",
                at=rec.lsn,
            )
        if self._prev is None and hdr.prev >= rec.lsn:
            raise self._fail("prev link", f"xl_prev {hdr.prev} is not before it", at=rec.lsn)

    def _complete(self, rec: _Partial) -> None:
        hdr = RecordHeader.decode(rec.header)
        crc = int(_crc32c.crc32c(bytes(rec.header[:_CRC_OFFSET]), rec.crc))
        if crc != hdr.crc:
            raise self._fail(
                "crc", f"CRC32C {crc:08x}, xl_crc says {hdr.crc:08x}", at=rec.lsn
            )
        self._rec = None
        self._done = WalRecord(Lsn(rec.lsn), Lsn(maxalign(self._pos)), hdr)

    def _padding(self, out: list[WalRecord]) -> bool:
        done = self._done
        assert done is not None, "W3: padding outside a record"
        n = done.next_lsn - self._pos
        if self._avail() < n:
            return False
        pad = self._take(n)
        if any(pad):
            bad = next(i for i, b in enumerate(pad) if b)
            raise self._fail(
                "padding", f"non-zero byte after the record's end at {Lsn(self._pos - n + bad)}",
                at=self._pos - n + bad, lsn=done.lsn,
            )
        self._emit_done(out)
        return True

    def _emit_done(self, out: list[WalRecord]) -> None:
        done = self._done
        assert done is not None, "W3: no record to emit"
        self._done = None
        if done.header.is_switch:
            seg_end = (done.next_lsn // self.seg_size + 1) * self.seg_size
            if done.next_lsn % self.seg_size == 0:
                seg_end = int(done.next_lsn)
            done = attrs.evolve(done, next_lsn=Lsn(seg_end))
            if seg_end > self._pos:
                self._skip_to = seg_end
        out.append(done)
        self.records += 1
        self.last_record_lsn = done.lsn
        self.end_lsn = done.next_lsn
        self._prev = int(done.lsn)
