"""Strict binary codec for protocol messages: one message per WebSocket message.

Layout: a one-byte tag, then big-endian fields. Each direction has its own decoder, so a
message arriving on the wrong side is an "unknown tag". Everything malformed — truncated,
trailing bytes, unknown tag, oversized or inconsistent WAL, bad CRC32C — raises
:class:`RemoteProtocolError` (never ``struct.error`` / ``IndexError`` / ``ValueError``).

========  ==================  ===========================================================
tag       message             fields
========  ==================  ===========================================================
``g``     Greeting            16s tenant, 16s timeline, u32 pg_version, u64 system_id,
                              u32 wal_seg_size
``v``     VoteRequest         u64 term
``e``     ProposerElected     u64 term, u64 start, u32 n, n x (u64 term, u64 lsn)
``a``     AppendRequest       u64 term, u64 begin, u64 end, u64 commit, u64 truncate,
                              u32 crc32c(data), data
``G``     AcceptorGreeting    u64 node_id, u64 term
``V``     VoteResponse        u64 term, u8 given, u64 flush, u64 truncate, u32 n, n x entry
``A``     AppendResponse      u64 term, u64 flush, u64 commit
``w``     WalData             u64 start, u64 end, u64 wal_end, i64 ts, u32 crc32c, data
``k``     Keepalive           u64 wal_end, i64 ts, u8 reply_requested
``r``     StatusUpdate        u64 write, u64 flush, u64 apply, i64 ts, u8 reply_requested
========  ==================  ===========================================================
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, TypeVar

import crc32c as _crc32c

from ._errors import CLOSE_TOO_BIG, RemoteProtocolError
from ._history import TermHistory, TermLsn
from ._ids import NodeId, TenantId, TimelineId
from ._lsn import Lsn
from ._messages import (
    MAX_SEND_SIZE,
    AcceptorGreeting,
    AcceptorMessage,
    AppendRequest,
    AppendResponse,
    Greeting,
    Keepalive,
    ProposerElected,
    ProposerMessage,
    StatusUpdate,
    StreamReaderMessage,
    StreamSenderMessage,
    VoteRequest,
    VoteResponse,
    WalData,
)

__all__ = [
    "MAX_HISTORY_ENTRIES",
    "MAX_MESSAGE_SIZE",
    "crc32c",
    "decode_acceptor_message",
    "decode_proposer_message",
    "decode_stream_reader_message",
    "decode_stream_sender_message",
    "encode",
]

MAX_HISTORY_ENTRIES: Final = 100_000
"""More term-history entries than this in one message is treated as hostile."""

MAX_MESSAGE_SIZE: Final = 64 + MAX_SEND_SIZE + 16 * MAX_HISTORY_ENTRIES
"""No valid message is larger; transports may refuse bigger frames before decoding."""

_GREETING = struct.Struct(">16s16sIQI")
_U64 = struct.Struct(">Q")
_ELECTED = struct.Struct(">QQI")
_ENTRY = struct.Struct(">QQ")
_APPEND_REQ = struct.Struct(">QQQQQI")
_ACC_GREETING = struct.Struct(">QQ")
_VOTE_RESP = struct.Struct(">QBQQI")
_APPEND_RESP = struct.Struct(">QQQ")
_WAL_DATA = struct.Struct(">QQQqI")
_KEEPALIVE = struct.Struct(">QqB")
_STATUS = struct.Struct(">QQQqB")

AnyMessage = ProposerMessage | AcceptorMessage | StreamSenderMessage | StreamReaderMessage


def crc32c(data: bytes | memoryview) -> int:
    """CRC32C (Castagnoli) of ``data``."""
    return int(_crc32c.crc32c(data))


def encode(msg: AnyMessage) -> bytes:
    """Serialise one message (tag byte first)."""
    match msg:
        case Greeting():
            return b"g" + _GREETING.pack(
                msg.tenant_id.raw, msg.timeline_id.raw, msg.pg_version, msg.system_id,
                msg.wal_seg_size,
            )
        case VoteRequest():
            return b"v" + _U64.pack(msg.term)
        case ProposerElected():
            return (
                b"e"
                + _ELECTED.pack(msg.term, msg.start_streaming_at, len(msg.term_history))
                + _encode_history(msg.term_history)
            )
        case AppendRequest():
            return (
                b"a"
                + _APPEND_REQ.pack(
                    msg.term, msg.begin_lsn, msg.end_lsn, msg.commit_lsn, msg.truncate_lsn,
                    crc32c(msg.data),
                )
                + msg.data
            )
        case AcceptorGreeting():
            return b"G" + _ACC_GREETING.pack(msg.node_id, msg.term)
        case VoteResponse():
            return (
                b"V"
                + _VOTE_RESP.pack(
                    msg.term, int(msg.vote_given), msg.flush_lsn, msg.truncate_lsn,
                    len(msg.term_history),
                )
                + _encode_history(msg.term_history)
            )
        case AppendResponse():
            return b"A" + _APPEND_RESP.pack(msg.term, msg.flush_lsn, msg.commit_lsn)
        case WalData():
            return (
                b"w"
                + _WAL_DATA.pack(
                    msg.start_lsn, msg.end_lsn, msg.wal_end, msg.timestamp_us, crc32c(msg.data)
                )
                + msg.data
            )
        case Keepalive():
            return b"k" + _KEEPALIVE.pack(msg.wal_end, msg.timestamp_us, int(msg.reply_requested))
        case StatusUpdate():
            return b"r" + _STATUS.pack(
                msg.write_lsn, msg.flush_lsn, msg.apply_lsn, msg.timestamp_us,
                int(msg.reply_requested),
            )
    raise TypeError(f"not a protocol message: {msg!r}")  # pragma: no cover


def _encode_history(history: TermHistory) -> bytes:
    return b"".join(_ENTRY.pack(e.term, e.lsn) for e in history)


class _Reader:
    """Cursor over one message body that turns every shortfall into a protocol error."""

    __slots__ = ("_buf", "_pos", "_what")

    def __init__(self, buf: bytes, what: str) -> None:
        self._buf = buf
        self._pos = 1
        self._what = what

    def unpack(self, st: struct.Struct) -> tuple[int | bytes, ...]:
        end = self._pos + st.size
        if end > len(self._buf):
            raise RemoteProtocolError(
                f"truncated {self._what}: need {end} bytes, got {len(self._buf)}"
            )
        values = st.unpack_from(self._buf, self._pos)
        self._pos = end
        return values

    def history(self, n: int) -> TermHistory:
        if n > MAX_HISTORY_ENTRIES:
            raise RemoteProtocolError(
                f"{self._what} term history of {n} entries is too long",
                close_code=CLOSE_TOO_BIG,
            )
        entries = []
        for _ in range(n):
            term, lsn = self.unpack(_ENTRY)
            entries.append(TermLsn(int(term), Lsn(int(lsn))))
        try:
            return TermHistory(tuple(entries))
        except ValueError as e:
            raise RemoteProtocolError(f"{self._what}: {e}") from None

    def payload(self, begin: int, end: int, crc: int) -> bytes:
        if end < begin:
            raise RemoteProtocolError(f"{self._what}: end {Lsn(end)} < begin {Lsn(begin)}")
        length = end - begin
        if length > MAX_SEND_SIZE:
            raise RemoteProtocolError(
                f"{self._what}: WAL payload of {length} bytes exceeds {MAX_SEND_SIZE}",
                close_code=CLOSE_TOO_BIG,
            )
        data = self._buf[self._pos :]
        if len(data) != length:
            raise RemoteProtocolError(
                f"{self._what}: header says {length} WAL bytes, message carries {len(data)}"
            )
        if crc32c(data) != crc:
            raise RemoteProtocolError(f"{self._what}: WAL payload CRC32C mismatch")
        self._pos = len(self._buf)
        return data

    def done(self) -> None:
        if self._pos != len(self._buf):
            raise RemoteProtocolError(
                f"{self._what}: {len(self._buf) - self._pos} trailing bytes"
            )


def _d_greeting(r: _Reader) -> Greeting:
    tenant, timeline, pg_version, system_id, seg = r.unpack(_GREETING)
    assert isinstance(tenant, bytes)
    assert isinstance(timeline, bytes)
    return Greeting(TenantId(tenant), TimelineId(timeline), int(pg_version), int(system_id),
                    int(seg))


def _d_vote_request(r: _Reader) -> VoteRequest:
    (term,) = r.unpack(_U64)
    return VoteRequest(int(term))


def _d_elected(r: _Reader) -> ProposerElected:
    term, start, n = r.unpack(_ELECTED)
    return ProposerElected(int(term), Lsn(int(start)), r.history(int(n)))


def _d_append_request(r: _Reader) -> AppendRequest:
    term, begin, end, commit, truncate, crc = r.unpack(_APPEND_REQ)
    data = r.payload(int(begin), int(end), int(crc))
    return AppendRequest(int(term), Lsn(int(begin)), Lsn(int(commit)), Lsn(int(truncate)), data)


def _d_acceptor_greeting(r: _Reader) -> AcceptorGreeting:
    node_id, term = r.unpack(_ACC_GREETING)
    return AcceptorGreeting(NodeId(int(node_id)), int(term))


def _d_vote_response(r: _Reader) -> VoteResponse:
    term, given, flush, truncate, n = r.unpack(_VOTE_RESP)
    return VoteResponse(int(term), _flag(given, "VoteResponse"), Lsn(int(flush)),
                        Lsn(int(truncate)), r.history(int(n)))


def _d_append_response(r: _Reader) -> AppendResponse:
    term, flush, commit = r.unpack(_APPEND_RESP)
    return AppendResponse(int(term), Lsn(int(flush)), Lsn(int(commit)))


def _d_wal_data(r: _Reader) -> WalData:
    start, end, wal_end, ts, crc = r.unpack(_WAL_DATA)
    data = r.payload(int(start), int(end), int(crc))
    return WalData(Lsn(int(start)), Lsn(int(wal_end)), int(ts), data)


def _d_keepalive(r: _Reader) -> Keepalive:
    wal_end, ts, reply = r.unpack(_KEEPALIVE)
    return Keepalive(Lsn(int(wal_end)), int(ts), _flag(reply, "Keepalive"))


def _d_status(r: _Reader) -> StatusUpdate:
    write, flush, apply, ts, reply = r.unpack(_STATUS)
    return StatusUpdate(Lsn(int(write)), Lsn(int(flush)), Lsn(int(apply)), int(ts),
                        _flag(reply, "StatusUpdate"))


def _flag(value: int | bytes, what: str) -> bool:
    if value not in (0, 1):
        raise RemoteProtocolError(f"{what}: boolean flag must be 0 or 1, got {value!r}")
    return bool(value)


M = TypeVar("M")


def _decoder(
    direction: str, table: dict[int, tuple[str, Callable[[_Reader], M]]]
) -> Callable[[bytes | bytearray | memoryview], M]:
    def decode(buf: bytes | bytearray | memoryview) -> M:
        # Typed callers cannot pass anything else, but a transport may hand us a text frame
        # (trio-websocket gives str for text messages); bytes(int) would even "succeed".
        untrusted: object = buf
        if not isinstance(untrusted, bytes | bytearray | memoryview):
            raise RemoteProtocolError(
                f"{direction}: expected a binary message, got {type(untrusted).__name__}"
            )
        data = bytes(buf)
        if not data:
            raise RemoteProtocolError(f"{direction}: empty message")
        if len(data) > MAX_MESSAGE_SIZE:
            raise RemoteProtocolError(
                f"{direction}: message of {len(data)} bytes is too large",
                close_code=CLOSE_TOO_BIG,
            )
        entry = table.get(data[0])
        if entry is None:
            raise RemoteProtocolError(f"{direction}: unknown message tag {data[:1]!r}")
        name, fn = entry
        r = _Reader(data, name)
        msg = fn(r)
        r.done()
        return msg

    decode.__doc__ = f"Decode one {direction} message; raise RemoteProtocolError if malformed."
    return decode


decode_proposer_message: Callable[[bytes | bytearray | memoryview], ProposerMessage] = _decoder(
    "proposer→acceptor",
    {
        ord("g"): ("Greeting", _d_greeting),
        ord("v"): ("VoteRequest", _d_vote_request),
        ord("e"): ("ProposerElected", _d_elected),
        ord("a"): ("AppendRequest", _d_append_request),
    },
)
decode_acceptor_message: Callable[[bytes | bytearray | memoryview], AcceptorMessage] = _decoder(
    "acceptor→proposer",
    {
        ord("G"): ("AcceptorGreeting", _d_acceptor_greeting),
        ord("V"): ("VoteResponse", _d_vote_response),
        ord("A"): ("AppendResponse", _d_append_response),
    },
)
decode_stream_sender_message: Callable[
    [bytes | bytearray | memoryview], StreamSenderMessage
] = _decoder(
    "WAL sender→reader",
    {ord("w"): ("WalData", _d_wal_data), ord("k"): ("Keepalive", _d_keepalive)},
)
decode_stream_reader_message: Callable[
    [bytes | bytearray | memoryview], StreamReaderMessage
] = _decoder("WAL reader→sender", {ord("r"): ("StatusUpdate", _d_status)})
