"""PostgreSQL frontend/backend protocol v3 framing, sans-IO: frontend messages in, backend
messages out (the server side of a physical replication connection).

Theory of operation
-------------------
:class:`FrontendParser` is fed the bytes a client sent (:meth:`~FrontendParser.feed`) and
hands out whole messages (:meth:`~FrontendParser.next_message`), first the untyped startup
packets (``SSLRequest``, ``GSSENCRequest``, ``CancelRequest``, ``StartupMessage``), then,
after :meth:`~FrontendParser.startup_done`, typed messages. The ``encode_*`` functions
build the backend messages. Nothing here does I/O or knows a clock.

Rules
-----
F1  A startup packet is at most :data:`MAX_STARTUP_PACKET` bytes and a typed message at
    most ``max_message`` bytes (both counting the length word): a bigger declared length
    is a :class:`PgError` (08P01) before any of its body is buffered.
F2  A startup packet is ``int32 length, int32 code`` and, for a StartupMessage, ``key\\0
    value\\0 ... \\0``; any other shape (odd pairs, missing terminator, bytes that are not
    UTF-8) is a :class:`PgError` (08P01).
F3  Typed frontend messages the port does not understand are handed out as
    :class:`UnknownMessage` (the server answers them); a declared length below 4 is 08P01.
F4  A CopyData body from a replication client is decoded by :func:`decode_copy_feedback`:
    a standby status update (``r``, 34 bytes), hot standby feedback (``h``), anything else
    08P01.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Final, final

import attrs

from ..core import Lsn
from ._errors import PROTOCOL_VIOLATION, PgError

__all__ = [
    "CANCEL_REQUEST_CODE",
    "GSSENC_REQUEST_CODE",
    "MAX_STARTUP_PACKET",
    "PROTOCOL_3_0",
    "SSL_REQUEST_CODE",
    "TEXT_OID",
    "INT4_OID",
    "CancelRequest",
    "CopyData",
    "CopyDone",
    "CopyFail",
    "FrontendMessage",
    "FrontendParser",
    "GssEncRequest",
    "HotStandbyFeedback",
    "PasswordMessage",
    "Query",
    "SslRequest",
    "StandbyStatusUpdate",
    "StartupMessage",
    "Terminate",
    "UnknownMessage",
    "decode_copy_feedback",
    "encode_auth_cleartext",
    "encode_auth_ok",
    "encode_backend_key_data",
    "encode_command_complete",
    "encode_copy_both_response",
    "encode_copy_done",
    "encode_data_row",
    "encode_empty_query",
    "encode_error",
    "encode_keepalive",
    "encode_negotiate_protocol_version",
    "encode_parameter_status",
    "encode_ready_for_query",
    "encode_row_description",
    "encode_xlog_data",
    "xlog_data_header",
]

MAX_STARTUP_PACKET: Final = 10_000
"""PostgreSQL's own limit on a startup packet (``MAX_STARTUP_PACKET_LENGTH``)."""
PROTOCOL_3_0: Final = 3 << 16
SSL_REQUEST_CODE: Final = 80877103
GSSENC_REQUEST_CODE: Final = 80877104
CANCEL_REQUEST_CODE: Final = 80877102
TEXT_OID: Final = 25
INT4_OID: Final = 23

_I32 = struct.Struct("!i")
_U64 = struct.Struct("!Q")


# ---- frontend messages ------------------------------------------------------------------

@final
@attrs.frozen
class SslRequest:
    pass


@final
@attrs.frozen
class GssEncRequest:
    pass


@final
@attrs.frozen
class CancelRequest:
    pid: int
    secret: int


@final
@attrs.frozen
class StartupMessage:
    """A StartupMessage: ``version`` (major << 16 | minor) and the key/value parameters."""

    version: int
    params: Mapping[str, str]


@final
@attrs.frozen
class Query:
    text: str


@final
@attrs.frozen
class PasswordMessage:
    password: bytes


@final
@attrs.frozen
class CopyData:
    data: bytes


@final
@attrs.frozen
class CopyDone:
    pass


@final
@attrs.frozen
class CopyFail:
    message: str


@final
@attrs.frozen
class Terminate:
    pass


@final
@attrs.frozen
class UnknownMessage:
    """A typed message the port does not understand (F3): answered with an error."""

    type: bytes
    body: bytes


FrontendMessage = (
    SslRequest | GssEncRequest | CancelRequest | StartupMessage | Query | PasswordMessage
    | CopyData | CopyDone | CopyFail | Terminate | UnknownMessage
)


def _cstring(raw: bytes, what: str) -> str:
    if not raw.endswith(b"\0") or b"\0" in raw[:-1]:
        raise PgError(PROTOCOL_VIOLATION, f"malformed {what}: not one NUL-terminated string")
    try:
        return raw[:-1].decode("utf-8")
    except UnicodeDecodeError:
        raise PgError(PROTOCOL_VIOLATION, f"malformed {what}: not UTF-8") from None


def _parse_startup(body: bytes) -> FrontendMessage:
    if len(body) < 4:
        raise PgError(PROTOCOL_VIOLATION, "invalid startup packet: shorter than its code",
                      fatal=True)
    (code,) = _I32.unpack_from(body)
    rest = body[4:]
    if code == SSL_REQUEST_CODE and not rest:
        return SslRequest()
    if code == GSSENC_REQUEST_CODE and not rest:
        return GssEncRequest()
    if code == CANCEL_REQUEST_CODE and len(rest) == 8:
        pid, secret = struct.unpack("!ii", rest)
        return CancelRequest(pid, secret)
    if code >> 16 != 3:
        raise PgError(PROTOCOL_VIOLATION,
                      f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: "
                      "this server supports 3.0", fatal=True)
    if not rest.endswith(b"\0"):
        raise PgError(PROTOCOL_VIOLATION,
                      "invalid startup packet layout: expected terminator as last byte",
                      fatal=True)
    pairs = rest[:-1]  # each key and value NUL-terminated, then the final NUL
    parts = pairs.split(b"\0")[:-1] if pairs else []
    if (pairs and not pairs.endswith(b"\0")) or len(parts) % 2:
        raise PgError(PROTOCOL_VIOLATION,
                      "invalid startup packet layout: a parameter without a value", fatal=True)
    try:
        strings = [p.decode("utf-8") for p in parts]
    except UnicodeDecodeError:
        raise PgError(PROTOCOL_VIOLATION, "invalid startup packet: not UTF-8",
                      fatal=True) from None
    params = dict(zip(strings[::2], strings[1::2], strict=True))
    return StartupMessage(code, params)


def _parse_typed(kind: bytes, body: bytes) -> FrontendMessage:
    match kind:
        case b"Q":
            return Query(_cstring(body, "Query message"))
        case b"p":
            # A password is one NUL-terminated string; keep its bytes (a JWT is ASCII).
            if not body.endswith(b"\0"):
                raise PgError(PROTOCOL_VIOLATION, "malformed password message", fatal=True)
            return PasswordMessage(body[:-1])
        case b"d":
            return CopyData(body)
        case b"c":
            return CopyDone()
        case b"f":
            return CopyFail(_cstring(body, "CopyFail message"))
        case b"X":
            return Terminate()
    return UnknownMessage(kind, body)


class FrontendParser:
    """Frames the client's bytes into :data:`FrontendMessage` s (rules F1-F3)."""

    def __init__(self, max_message: int = 1024 * 1024) -> None:
        self._buf = bytearray()
        self._startup = True
        self._max_message = max_message

    def feed(self, data: bytes | bytearray) -> None:
        """Append bytes received from the client."""
        self._buf += data

    def startup_done(self) -> None:
        """From now on messages are typed (call after a StartupMessage was accepted)."""
        self._startup = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_message(self) -> FrontendMessage | None:
        """The next whole message, or ``None`` until more bytes are fed. Raises
        :class:`PgError` (08P01) for a malformed or oversized one (the connection cannot go
        on: framing is lost)."""
        buf = self._buf
        if self._startup:
            if len(buf) < 4:
                return None
            (length,) = _I32.unpack_from(buf)
            if length < 8 or length > MAX_STARTUP_PACKET:
                raise PgError(PROTOCOL_VIOLATION, f"invalid length of startup packet: {length}",
                              fatal=True)
            if len(buf) < length:
                return None
            body = bytes(buf[4:length])
            del buf[:length]
            return _parse_startup(body)
        if len(buf) < 5:
            return None
        kind = bytes(buf[:1])
        (length,) = _I32.unpack_from(buf, 1)
        if length < 4:
            raise PgError(PROTOCOL_VIOLATION, f"invalid message length {length}", fatal=True)
        if length > self._max_message:
            raise PgError(PROTOCOL_VIOLATION,
                          f"message of {length} bytes is bigger than this port's limit of "
                          f"{self._max_message}", fatal=True)
        if len(buf) < 1 + length:
            return None
        body = bytes(buf[5 : 1 + length])
        del buf[: 1 + length]
        try:
            return _parse_typed(kind, body)
        except PgError as e:
            raise PgError(e.sqlstate, e.message, fatal=True) from None


# ---- CopyData from a replication client (F4) --------------------------------------------

@final
@attrs.frozen
class StandbyStatusUpdate:
    write_lsn: Lsn
    flush_lsn: Lsn
    apply_lsn: Lsn
    timestamp_us: int
    reply_requested: bool


@final
@attrs.frozen
class HotStandbyFeedback:
    timestamp_us: int
    xmin: int
    xmin_epoch: int


_STATUS = struct.Struct("!QQQqB")


def decode_copy_feedback(data: bytes) -> StandbyStatusUpdate | HotStandbyFeedback:
    """Decode a CopyData body a replication client sent (F4); 08P01 otherwise."""
    if data[:1] == b"r" and len(data) == 1 + _STATUS.size:
        write, flush, apply, ts, reply = _STATUS.unpack_from(data, 1)
        return StandbyStatusUpdate(Lsn(write), Lsn(flush), Lsn(apply), ts, bool(reply))
    if data[:1] == b"h" and len(data) >= 17:
        ts, xmin, epoch = struct.unpack_from("!qII", data, 1)
        return HotStandbyFeedback(ts, xmin, epoch)
    raise PgError(PROTOCOL_VIOLATION,
                  f"unexpected message type {data[:1]!r} ({len(data)} bytes) in the replication "
                  "stream: expected a standby status update ('r') or hot standby feedback ('h')",
                  fatal=True)


# ---- backend messages -------------------------------------------------------------------

def _msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + _I32.pack(len(body) + 4) + body


def _cstr(text: str) -> bytes:
    return text.encode("utf-8").replace(b"\0", b"") + b"\0"


def encode_auth_ok() -> bytes:
    return _msg(b"R", _I32.pack(0))


def encode_auth_cleartext() -> bytes:
    return _msg(b"R", _I32.pack(3))


def encode_parameter_status(name: str, value: str) -> bytes:
    return _msg(b"S", _cstr(name) + _cstr(value))


def encode_backend_key_data(pid: int, secret: int) -> bytes:
    return _msg(b"K", struct.pack("!ii", pid, secret))


def encode_ready_for_query() -> bytes:
    return _msg(b"Z", b"I")


def encode_negotiate_protocol_version(minor: int, unknown: Sequence[str]) -> bytes:
    return _msg(b"v", struct.pack("!ii", minor, len(unknown)) + b"".join(map(_cstr, unknown)))


def encode_error(error: PgError) -> bytes:
    """An ErrorResponse: severity (FATAL or ERROR), SQLSTATE and message."""
    severity = "FATAL" if error.fatal else "ERROR"
    fields = (b"S" + _cstr(severity) + b"V" + _cstr(severity) + b"C" + _cstr(error.sqlstate)
              + b"M" + _cstr(error.message))
    return _msg(b"E", fields + b"\0")


def encode_row_description(columns: Sequence[tuple[str, int]]) -> bytes:
    """A RowDescription of text-format columns ``(name, type oid)``."""
    body = struct.pack("!h", len(columns))
    for name, oid in columns:
        size = 4 if oid == INT4_OID else -1
        body += _cstr(name) + struct.pack("!ihihih", 0, 0, oid, size, -1, 0)
    return _msg(b"T", body)


def encode_data_row(values: Sequence[str | None]) -> bytes:
    body = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            body += _I32.pack(-1)
        else:
            raw = value.encode("utf-8")
            body += _I32.pack(len(raw)) + raw
    return _msg(b"D", body)


def encode_command_complete(tag: str) -> bytes:
    return _msg(b"C", _cstr(tag))


def encode_empty_query() -> bytes:
    return _msg(b"I")


def encode_copy_both_response() -> bytes:
    return _msg(b"W", struct.pack("!bh", 0, 0))


def encode_copy_done() -> bytes:
    return _msg(b"c")


def encode_xlog_data(start: Lsn, wal_end: Lsn, timestamp_us: int, data: bytes) -> bytes:
    """A CopyData carrying XLogData (``w``): WAL bytes from ``start``."""
    return xlog_data_header(start, wal_end, timestamp_us, len(data)) + data


_XLOG_HEAD: Final = struct.Struct("!cicQQq")


def xlog_data_header(start: Lsn, wal_end: Lsn, timestamp_us: int, nbytes: int) -> bytes:
    """The first 30 bytes of :func:`encode_xlog_data` for ``nbytes`` of WAL: a sender
    that writes the WAL itself after it (vectored) never copies the WAL into a message."""
    return _XLOG_HEAD.pack(b"d", 4 + 25 + nbytes, b"w", int(start), int(wal_end), timestamp_us)


def encode_keepalive(wal_end: Lsn, timestamp_us: int, reply_requested: bool) -> bytes:
    """A CopyData carrying a primary keepalive (``k``)."""
    return _msg(b"d", b"k" + struct.pack("!QqB", int(wal_end), timestamp_us, reply_requested))
