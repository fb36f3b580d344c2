"""Protocol messages (frozen attrs classes; h11-style events).

Proposer → acceptor (``wal_push``): :class:`Greeting`, :class:`VoteRequest`,
:class:`ProposerElected`, :class:`AppendRequest`.
Acceptor → proposer: :class:`AcceptorGreeting`, :class:`VoteResponse`,
:class:`AppendResponse`.
WAL stream (``wal_stream``), sender → reader: :class:`WalData`, :class:`Keepalive`;
reader → sender: :class:`StatusUpdate`.

:class:`FlushWal` is internal (never on the wire): "fsync what was written, then report".
The binary codec lives in ``_codec``.
"""

from __future__ import annotations

from typing import Final, final

import attrs

from ._history import Term, TermHistory
from ._ids import NodeId, TenantId, TimelineId
from ._lsn import Lsn

__all__ = [
    "AcceptorGreeting",
    "AcceptorMessage",
    "AppendRequest",
    "AppendResponse",
    "FlushWal",
    "Greeting",
    "Keepalive",
    "MAX_SEND_SIZE",
    "ProposerElected",
    "ProposerMessage",
    "StatusUpdate",
    "StreamReaderMessage",
    "StreamSenderMessage",
    "VoteRequest",
    "VoteResponse",
    "WalData",
]

MAX_SEND_SIZE: Final = 128 * 8192
"""Largest WAL payload of one AppendRequest or WalData message (1 MiB).

DESIGN.md fixed 128 KiB (Neon's size). Every message costs the receiver the same Python
work whatever its size (WebSocket framing, decode, one acceptor step under the timeline
lock, task handoffs), so 1 MiB messages cut that per-byte cost eightfold: recovery of
1 GiB went from 0.64x to 1.28x pg_receivewal in the same benchmark window
(docs/benchmarks.md). Segments are at least 1 MiB, so a chunk still never crosses one."""


def _check_payload(_: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    if len(value) > MAX_SEND_SIZE:
        raise ValueError(f"{attribute.name} of {len(value)} bytes exceeds {MAX_SEND_SIZE}")


@final
@attrs.frozen
class Greeting:
    """A proposer introduces itself and the timeline it writes."""

    tenant_id: TenantId
    timeline_id: TimelineId
    pg_version: int = 0
    system_id: int = 0
    wal_seg_size: int = 0
    """0 means "whatever the timeline was created with"."""


@final
@attrs.frozen
class AcceptorGreeting:
    node_id: NodeId
    term: Term


@final
@attrs.frozen
class VoteRequest:
    term: Term


@final
@attrs.frozen
class VoteResponse:
    """``term_history`` is already cut at ``flush_lsn``."""

    term: Term
    vote_given: bool
    flush_lsn: Lsn
    truncate_lsn: Lsn
    term_history: TermHistory


@final
@attrs.frozen
class ProposerElected:
    term: Term
    start_streaming_at: Lsn
    term_history: TermHistory


@final
@attrs.frozen
class AppendRequest:
    """WAL ``data`` starting at ``begin_lsn``; ``end_lsn`` is derived from its length."""

    term: Term
    begin_lsn: Lsn
    commit_lsn: Lsn
    truncate_lsn: Lsn
    data: bytes = attrs.field(validator=_check_payload, repr=lambda d: f"<{len(d)} bytes>")

    @property
    def end_lsn(self) -> Lsn:
        return self.begin_lsn + len(self.data)


@final
@attrs.frozen
class AppendResponse:
    """``flush_lsn`` and ``commit_lsn`` are 0 in a term-only rejection."""

    term: Term
    flush_lsn: Lsn
    commit_lsn: Lsn


@final
@attrs.frozen
class FlushWal:
    """Internal: fsync pending WAL, then answer with an AppendResponse."""


@final
@attrs.frozen
class WalData:
    """A chunk of WAL from ``start_lsn``; ``wal_end`` is the sender's end at send time."""

    start_lsn: Lsn
    wal_end: Lsn
    timestamp_us: int
    data: bytes = attrs.field(validator=_check_payload, repr=lambda d: f"<{len(d)} bytes>")

    @property
    def end_lsn(self) -> Lsn:
        return self.start_lsn + len(self.data)


@final
@attrs.frozen
class Keepalive:
    """The sender had nothing to send for a while; ``wal_end`` is its end position."""

    wal_end: Lsn
    timestamp_us: int
    reply_requested: bool = False


@final
@attrs.frozen
class StatusUpdate:
    """The reader reports how far it has written / flushed / applied."""

    write_lsn: Lsn
    flush_lsn: Lsn
    apply_lsn: Lsn
    timestamp_us: int
    reply_requested: bool = False


ProposerMessage = Greeting | VoteRequest | ProposerElected | AppendRequest
AcceptorMessage = AcceptorGreeting | VoteResponse | AppendResponse
StreamSenderMessage = WalData | Keepalive
StreamReaderMessage = StatusUpdate
