"""Pulling a timeline from a peer (bootstrap): donor choice and the snapshot's wire format.

Theory of operation
-------------------
A node that lacks a timeline (a new disk, a new node) asks the peers it was given for
their status of it, picks a donor and streams a *snapshot* from it: the donor's control
state plus its WAL from its removal horizon to its flush position. The receiver builds the
timeline aside and installs it in one rename; ordinary peer recovery then catches up
whatever arrived meanwhile. This module is pure: the decisions and the bytes.

B1  The donor is the most advanced candidate by ``(last_log_term, flush_lsn)``, never by
    ``term`` (a node with a high term but an old log would lose committed WAL: Neon
    #12778). Ties go to the URL listed first, so the operator's order decides.
B2  A snapshot is a sequence of frames ``u8 tag | u32 length | payload | u32 CRC32C``
    (big-endian; the CRC covers tag, length and payload). Tags: ``H`` header (once,
    first), ``W`` WAL (``u64 lsn | bytes``), then exactly one of ``E`` end (``u64 term |
    u64 end_lsn``) or ``X`` abort (``u8 kind | utf-8 reason``). A frame longer than
    :data:`MAX_FRAME` or with an unknown tag is refused before its payload is buffered.
B3  The header carries the format version, the donor's node id, the term of the
    snapshot, ``start_lsn`` (the donor's removal horizon: where its WAL begins),
    ``end_lsn`` (its flush position) and the control state (``encode_state``) whose
    positions match them.
B4  WAL frames are contiguous: the first starts at ``start_lsn``, each starts where the
    previous ended, and the last ends exactly at ``end_lsn``.
B5  The end frame repeats the header's term and ``end_lsn``: the donor checked, after the
    last WAL frame, that its term had not moved. An abort of kind ``term`` means it had
    (:class:`PullTermChanged`: the pull is redone); any other abort, a CRC mismatch, a
    gap or a stream that ends before its end frame is :class:`SnapshotInvalid` and
    nothing is installed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final, Literal, final

import attrs

from ._codec import crc32c
from ._errors import PullTermChanged, SnapshotInvalid
from ._history import Term
from ._ids import NodeId
from ._lsn import Lsn

__all__ = [
    "MAX_FRAME",
    "SNAPSHOT_VERSION",
    "PullCandidate",
    "PullDonorChoice",
    "SnapshotAbort",
    "SnapshotDecoder",
    "SnapshotEnd",
    "SnapshotHeader",
    "SnapshotWal",
    "choose_pull_donor",
    "encode_abort",
    "encode_end",
    "encode_header",
    "encode_wal",
]

SNAPSHOT_VERSION: Final = 1
MAX_FRAME: Final = 16 * 1024 * 1024
"""The longest frame payload accepted (a WAL frame is at most 1 MiB plus its LSN; a
control state of a very long term history stays far below)."""

_PREFIX: Final = struct.Struct(">BI")
_CRC: Final = struct.Struct(">I")
_HEADER: Final = struct.Struct(">IQQQQ")  # version, node id, term, start_lsn, end_lsn
_LSN: Final = struct.Struct(">Q")
_END: Final = struct.Struct(">QQ")
_TAGS: Final = frozenset(b"HWEX")

AbortKind = Literal["term", "error"]
_ABORT_CODES: Final[dict[AbortKind, int]] = {"term": 1, "error": 2}


@final
@attrs.frozen
class PullCandidate:
    """One peer's answer about the timeline (B1's inputs)."""

    url: str
    term: Term
    last_log_term: Term
    flush_lsn: Lsn

    def __str__(self) -> str:
        return (f"{self.url}(term={self.term} "
                f"last_log_term={self.last_log_term} flush={self.flush_lsn})")


@final
@attrs.frozen
class PullDonorChoice:
    """The donor of B1 and the candidates it was chosen from (one log line as ``str``)."""

    donor: PullCandidate | None
    ranked: tuple[PullCandidate, ...]
    """Every candidate, best first."""
    unavailable: tuple[str, ...]
    """The URLs that did not answer or lack the timeline, with why."""

    def __str__(self) -> str:
        ranked = ", ".join(str(c) for c in self.ranked) or "none"
        down = f"; unavailable: {'; '.join(self.unavailable)}" if self.unavailable else ""
        return f"donor={self.donor.url if self.donor else None} ranked=[{ranked}]{down}"


def choose_pull_donor(
    candidates: Iterable[PullCandidate], unavailable: Iterable[str] = ()
) -> PullDonorChoice:
    """Rule B1: rank by ``(last_log_term, flush_lsn)`` descending (ties keep the order
    given: stable sort). ``donor`` is ``None`` when there is no candidate."""
    ranked = tuple(sorted(
        candidates, key=lambda c: (-int(c.last_log_term), -int(c.flush_lsn)),
    ))
    return PullDonorChoice(ranked[0] if ranked else None, ranked, tuple(unavailable))


# ---- frames -------------------------------------------------------------------------------


@final
@attrs.frozen
class SnapshotHeader:
    """B3: what the snapshot holds."""

    node_id: NodeId
    term: Term
    start_lsn: Lsn
    end_lsn: Lsn
    state_body: bytes
    """The control state (``encode_state``) the receiver installs."""


@final
@attrs.frozen
class SnapshotWal:
    lsn: Lsn
    data: bytes


@final
@attrs.frozen
class SnapshotEnd:
    term: Term
    end_lsn: Lsn


@final
@attrs.frozen
class SnapshotAbort:
    kind: AbortKind
    reason: str


SnapshotFrame = SnapshotHeader | SnapshotWal | SnapshotEnd | SnapshotAbort


def _frame(tag: bytes, payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise ValueError(f"snapshot frame of {len(payload)} bytes is over {MAX_FRAME}")
    head = _PREFIX.pack(tag[0], len(payload))
    return head + payload + _CRC.pack(crc32c(head + payload))


def encode_header(header: SnapshotHeader) -> bytes:
    fixed = _HEADER.pack(SNAPSHOT_VERSION, int(header.node_id), header.term,
                         int(header.start_lsn), int(header.end_lsn))
    return _frame(b"H", fixed + header.state_body)


def encode_wal(lsn: Lsn, data: bytes) -> bytes:
    return _frame(b"W", _LSN.pack(int(lsn)) + data)


def encode_end(term: Term, end_lsn: Lsn) -> bytes:
    return _frame(b"E", _END.pack(term, int(end_lsn)))


def encode_abort(kind: AbortKind, reason: str) -> bytes:
    return _frame(b"X", bytes([_ABORT_CODES[kind]]) + reason.encode()[:4096])


class SnapshotDecoder:
    """Sans-IO reader of one snapshot: :meth:`feed` bytes as they arrive, get the frames
    that are complete, each checked (B2-B5). Raises :class:`SnapshotInvalid` for anything
    malformed or out of order and :class:`PullTermChanged` for a term abort; after the
    end frame, :attr:`complete` is true and further bytes are refused."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.header: SnapshotHeader | None = None
        self.next_lsn: Lsn | None = None
        self.complete = False

    def feed(self, data: bytes) -> list[SnapshotFrame]:
        # Frames are checked and cut out through a memoryview: a WAL frame's bytes are
        # copied once into the buffer and once into the frame, never more.
        self._buf += data
        frames: list[SnapshotFrame] = []
        offset = 0
        with memoryview(self._buf) as view:
            while True:
                taken = self._take(view, offset)
                if taken is None:
                    break
                frame, size = taken
                frames.append(frame)
                offset += size
        del self._buf[:offset]
        return frames

    def _take(self, view: memoryview, offset: int) -> tuple[SnapshotFrame, int] | None:
        """The complete frame at ``offset`` and its size, or ``None`` if it has not all
        arrived (its views of the buffer end with this call)."""
        if len(view) - offset < _PREFIX.size:
            return None
        tag, length = _PREFIX.unpack_from(view, offset)
        if tag not in _TAGS:
            raise SnapshotInvalid(f"snapshot frame has unknown tag {tag:#04x}")
        if length > MAX_FRAME:
            raise SnapshotInvalid(f"snapshot frame of {length} bytes is over {MAX_FRAME}")
        total = _PREFIX.size + length + _CRC.size
        if len(view) - offset < total:
            return None
        end = offset + total - _CRC.size
        (stored,) = _CRC.unpack_from(view, end)
        if crc32c(view[offset:end]) != stored:
            raise SnapshotInvalid(f"snapshot frame {chr(tag)!r} failed its CRC32C check")
        return self._check(chr(tag), view[offset + _PREFIX.size: end]), total

    def finish(self) -> SnapshotHeader:
        """The stream ended: return the header if the end frame came (B5), else raise."""
        if not self.complete or self.header is None:
            where = f" at {self.next_lsn}" if self.next_lsn is not None else ""
            raise SnapshotInvalid(f"snapshot stream ended before its end frame{where}")
        if self._buf:
            raise SnapshotInvalid(f"{len(self._buf)} bytes after the snapshot's end frame")
        return self.header

    def _check(self, tag: str, payload: memoryview) -> SnapshotFrame:
        if self.complete:
            raise SnapshotInvalid("snapshot frame after the end frame")
        if tag == "X":
            kind = next((k for k, v in _ABORT_CODES.items() if bytes(payload[:1]) == bytes([v])),
                        "error")
            reason = bytes(payload[1:]).decode(errors="replace")
            if kind == "term":
                raise PullTermChanged(f"donor's term moved during the snapshot: {reason}")
            raise SnapshotInvalid(f"donor aborted the snapshot: {reason}")
        if tag == "H":
            if self.header is not None:
                raise SnapshotInvalid("second snapshot header")
            if len(payload) < _HEADER.size:
                raise SnapshotInvalid("snapshot header too short")
            version, node, term, start, end = _HEADER.unpack_from(payload)
            if version != SNAPSHOT_VERSION:
                raise SnapshotInvalid(f"snapshot format version {version}, expected "
                                      f"{SNAPSHOT_VERSION}")
            if start > end:
                raise SnapshotInvalid(f"snapshot start {Lsn(start)} is past its end {Lsn(end)}")
            self.header = SnapshotHeader(NodeId(node), term, Lsn(start), Lsn(end),
                                         bytes(payload[_HEADER.size:]))
            self.next_lsn = Lsn(start)
            return self.header
        if self.header is None or self.next_lsn is None:
            raise SnapshotInvalid(f"snapshot frame {tag!r} before the header")
        if tag == "W":
            if len(payload) <= _LSN.size:
                raise SnapshotInvalid("empty WAL frame in snapshot")
            (lsn,) = _LSN.unpack_from(payload)
            data = bytes(payload[_LSN.size:])
            if lsn != self.next_lsn:
                raise SnapshotInvalid(
                    f"snapshot WAL frame at {Lsn(lsn)}, expected {self.next_lsn}")
            if lsn + len(data) > self.header.end_lsn:
                raise SnapshotInvalid(
                    f"snapshot WAL frame runs past the end {self.header.end_lsn}")
            self.next_lsn = Lsn(lsn + len(data))
            return SnapshotWal(Lsn(lsn), data)
        # "E"
        if len(payload) != _END.size:
            raise SnapshotInvalid("snapshot end frame has the wrong size")
        term, end = _END.unpack(payload)
        if term != self.header.term:
            raise PullTermChanged(
                f"donor's term moved from {self.header.term} to {term} during the snapshot")
        if end != self.header.end_lsn or self.next_lsn != self.header.end_lsn:
            raise SnapshotInvalid(
                f"snapshot ended at {self.next_lsn}, its header said {self.header.end_lsn}")
        self.complete = True
        return SnapshotEnd(term, Lsn(end))
