"""The pgproto codec (pure): framing rules F1-F4 and the backend encoders' layout."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.pgproto import (
    MAX_STARTUP_PACKET,
    PROTOCOL_3_0,
    PROTOCOL_VIOLATION,
    SSL_REQUEST_CODE,
    CopyData,
    CopyDone,
    FrontendParser,
    GssEncRequest,
    HotStandbyFeedback,
    PasswordMessage,
    PgError,
    Query,
    SslRequest,
    StandbyStatusUpdate,
    StartupMessage,
    Terminate,
    UnknownMessage,
    decode_copy_feedback,
    encode_data_row,
    encode_error,
    encode_keepalive,
    encode_row_description,
    encode_xlog_data,
    xlog_data_header,
)


def startup(params: dict[str, str], version: int = PROTOCOL_3_0) -> bytes:
    body = struct.pack("!i", version)
    body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items())
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def typed(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def test_w2_startup_message_parameters_are_read_in_order() -> None:
    p = FrontendParser()
    p.feed(startup({"user": "u", "replication": "true", "options": "-c a=b"}))
    assert p.next_message() == StartupMessage(
        PROTOCOL_3_0, {"user": "u", "replication": "true", "options": "-c a=b"})


def test_ssl_and_gss_requests_then_startup_byte_by_byte() -> None:
    p = FrontendParser()
    raw = (struct.pack("!ii", 8, SSL_REQUEST_CODE) + struct.pack("!ii", 8, 80877104)
           + startup({"user": "u"}))
    out = []
    for b in raw:
        p.feed(bytes([b]))
        while (m := p.next_message()) is not None:
            out.append(m)
    assert out == [SslRequest(), GssEncRequest(), StartupMessage(PROTOCOL_3_0, {"user": "u"})]


@pytest.mark.parametrize("length", [4, 7, MAX_STARTUP_PACKET + 1, -1])
def test_w1_startup_length_out_of_range_is_refused_before_buffering(length: int) -> None:
    p = FrontendParser()
    p.feed(struct.pack("!i", length))
    with pytest.raises(PgError) as e:
        p.next_message()
    assert e.value.sqlstate == PROTOCOL_VIOLATION
    assert e.value.fatal


@pytest.mark.parametrize("body", [
    struct.pack("!i", PROTOCOL_3_0) + b"user\0u\0",  # no final terminator
    struct.pack("!i", PROTOCOL_3_0) + b"user\0\0",  # a key without a value
    struct.pack("!i", PROTOCOL_3_0) + b"us\xffer\0u\0\0",  # not UTF-8
    struct.pack("!i", 2 << 16) + b"\0",  # protocol 2
])
def test_w2_malformed_startup_packets_are_protocol_violations(body: bytes) -> None:
    p = FrontendParser()
    p.feed(struct.pack("!i", len(body) + 4) + body)
    with pytest.raises(PgError) as e:
        p.next_message()
    assert e.value.sqlstate == PROTOCOL_VIOLATION


def test_w3_typed_messages_after_startup() -> None:
    p = FrontendParser()
    p.startup_done()
    p.feed(typed(b"Q", b"IDENTIFY_SYSTEM\0") + typed(b"p", b"tok\0") + typed(b"d", b"xy")
           + typed(b"c", b"") + typed(b"P", b"\0q\0\0\0") + typed(b"X", b""))
    msgs = []
    while (m := p.next_message()) is not None:
        msgs.append(m)
    assert msgs == [Query("IDENTIFY_SYSTEM"), PasswordMessage(b"tok"), CopyData(b"xy"),
                    CopyDone(), UnknownMessage(b"P", b"\0q\0\0\0"), Terminate()]


@pytest.mark.parametrize("length", [3, 1024 * 1024 + 1])
def test_w1_w3_typed_length_out_of_range(length: int) -> None:
    p = FrontendParser(max_message=1024 * 1024)
    p.startup_done()
    p.feed(b"Q" + struct.pack("!i", length))
    with pytest.raises(PgError, match=r"length|bigger"):
        p.next_message()


def test_query_with_an_inner_nul_is_refused() -> None:
    p = FrontendParser()
    p.startup_done()
    p.feed(typed(b"Q", b"SHOW\0x\0"))
    with pytest.raises(PgError):
        p.next_message()


def test_w4_standby_status_update_and_hot_standby_feedback() -> None:
    r = b"r" + struct.pack("!QQQqB", 0x3000000, 0x2000000, 0x1000000, 77, 1)
    assert decode_copy_feedback(r) == StandbyStatusUpdate(
        Lsn(0x3000000), Lsn(0x2000000), Lsn(0x1000000), 77, True)
    h = b"h" + struct.pack("!qIIII", 5, 700, 0, 0, 0)
    assert decode_copy_feedback(h) == HotStandbyFeedback(5, 700, 0)
    for bad in (b"", b"r" + bytes(10), b"z" + bytes(33)):
        with pytest.raises(PgError):
            decode_copy_feedback(bad)


def test_xlog_data_and_keepalive_layout() -> None:
    msg = encode_xlog_data(Lsn(0x100), Lsn(0x200), 9, b"abc")
    assert msg[:1] == b"d"
    assert struct.unpack_from("!i", msg, 1)[0] == len(msg) - 1
    assert msg[5:6] == b"w"
    assert struct.unpack_from("!QQq", msg, 6) == (0x100, 0x200, 9)
    assert msg[30:] == b"abc"
    assert xlog_data_header(Lsn(0x100), Lsn(0x200), 9, 3) + b"abc" == msg
    k = encode_keepalive(Lsn(0x200), 9, True)
    assert k == b"d" + struct.pack("!i", 4 + 18) + b"k" + struct.pack("!QqB", 0x200, 9, 1)


def test_error_response_fields() -> None:
    raw = encode_error(PgError("0A000", "no SQL here", fatal=True))
    assert raw[:1] == b"E"
    fields = dict((f[:1], f[1:].decode()) for f in raw[5:-1].split(b"\0") if f)
    assert fields[b"S"] == "FATAL"
    assert fields[b"C"] == "0A000"
    assert fields[b"M"] == "no SQL here"


def test_row_description_and_data_row() -> None:
    t = encode_row_description([("a", 25), ("b", 23)])
    assert struct.unpack_from("!h", t, 5) == (2,)
    d = encode_data_row(["x", None])
    assert d[5:] == struct.pack("!h", 2) + struct.pack("!i", 1) + b"x" + struct.pack("!i", -1)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_parser(data: bytes) -> None:
    """Garbage yields messages, waits for more, or a PgError: nothing else."""
    for startup_phase in (True, False):
        p = FrontendParser(max_message=4096)
        if not startup_phase:
            p.startup_done()
        p.feed(data)
        try:
            while p.next_message() is not None:
                pass
        except PgError:
            pass
