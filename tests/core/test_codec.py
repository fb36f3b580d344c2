"""The binary codec: round trips for every message, and hostile input of every kind."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, cast

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from safekeeper_recovery.core import (
    MAX_HISTORY_ENTRIES,
    MAX_MESSAGE_SIZE,
    MAX_SEND_SIZE,
    AcceptorGreeting,
    AcceptorMessage,
    AppendRequest,
    AppendResponse,
    Greeting,
    Keepalive,
    Lsn,
    NodeId,
    ProposerElected,
    ProposerMessage,
    RemoteProtocolError,
    StatusUpdate,
    StreamReaderMessage,
    StreamSenderMessage,
    TenantId,
    TermHistory,
    TimelineId,
    VoteRequest,
    VoteResponse,
    WalData,
    crc32c,
    decode_acceptor_message,
    decode_proposer_message,
    decode_stream_reader_message,
    decode_stream_sender_message,
    encode,
)

from ._strategies import (
    acceptor_messages,
    proposer_messages,
    stream_reader_messages,
    stream_sender_messages,
)

AnyMessage = ProposerMessage | AcceptorMessage | StreamSenderMessage | StreamReaderMessage
Decoder = Callable[[bytes | bytearray | memoryview], AnyMessage]

DECODERS: dict[str, Decoder] = {
    "proposer": decode_proposer_message,
    "acceptor": decode_acceptor_message,
    "stream_sender": decode_stream_sender_message,
    "stream_reader": decode_stream_reader_message,
}

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009

HISTORY = TermHistory.of((0, 0x1000), (3, 0x2000), (7, 0x2000))
TENANT = TenantId(bytes(range(16)))
TIMELINE = TimelineId(bytes(range(16, 32)))

# One valid sample of every message type, with the decoder of its direction.
SAMPLES: list[tuple[AnyMessage, str]] = [
    (Greeting(TENANT, TIMELINE, 160002, 7_000_000_000_000_000_001, 16 << 20), "proposer"),
    (VoteRequest(5), "proposer"),
    (ProposerElected(7, Lsn(0x2000), HISTORY), "proposer"),
    (AppendRequest(7, Lsn(0x2000), Lsn(0x1800), Lsn(0x1000), b"wal bytes"), "proposer"),
    (AcceptorGreeting(NodeId(3), 7), "acceptor"),
    (VoteResponse(7, True, Lsn(0x2100), Lsn(0x1000), HISTORY), "acceptor"),
    (AppendResponse(7, Lsn(0x2100), Lsn(0x2000)), "acceptor"),
    (WalData(Lsn(0x2000), Lsn(0x3000), -5, b"some wal"), "stream_sender"),
    (Keepalive(Lsn(0x3000), 123, True), "stream_sender"),
    (StatusUpdate(Lsn(1), Lsn(2), Lsn(3), 4, False), "stream_reader"),
]
SAMPLE_IDS = [type(m).__name__ for m, _ in SAMPLES]


def _rpe(fn: Callable[[], object]) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        fn()
    return info.value


# ---- round trips ---------------------------------------------------------------------------


@given(proposer_messages)
def test_proposer_messages_round_trip(msg: ProposerMessage) -> None:
    assert decode_proposer_message(encode(msg)) == msg


@given(acceptor_messages)
def test_acceptor_messages_round_trip(msg: AcceptorMessage) -> None:
    assert decode_acceptor_message(encode(msg)) == msg


@given(stream_sender_messages)
def test_stream_sender_messages_round_trip(msg: StreamSenderMessage) -> None:
    assert decode_stream_sender_message(encode(msg)) == msg


@given(stream_reader_messages)
def test_stream_reader_messages_round_trip(msg: StreamReaderMessage) -> None:
    assert decode_stream_reader_message(encode(msg)) == msg


@pytest.mark.parametrize(("msg", "direction"), SAMPLES, ids=SAMPLE_IDS)
def test_decoders_accept_bytes_bytearray_and_memoryview(msg: AnyMessage, direction: str) -> None:
    wire = encode(msg)
    decode = DECODERS[direction]
    assert decode(wire) == decode(bytearray(wire)) == decode(memoryview(wire)) == msg


def test_encoding_layout_is_tag_then_big_endian_fields() -> None:
    assert encode(VoteRequest(0x0102030405060708)) == b"v\x01\x02\x03\x04\x05\x06\x07\x08"
    assert encode(AppendResponse(1, Lsn(2), Lsn(3))) == b"A" + struct.pack(">QQQ", 1, 2, 3)
    data = b"xyz"
    assert encode(AppendRequest(1, Lsn(10), Lsn(4), Lsn(5), data)) == (
        b"a" + struct.pack(">QQQQQI", 1, 10, 13, 4, 5, crc32c(data)) + data
    )


def test_crc32c_is_castagnoli() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(memoryview(b"123456789")) == 0xE3069283


def test_a_payload_of_exactly_max_send_size_is_accepted() -> None:
    msg = AppendRequest(1, Lsn(0), Lsn(0), Lsn(0), b"\x5a" * MAX_SEND_SIZE)
    assert decode_proposer_message(encode(msg)) == msg


def test_building_a_message_with_an_oversized_payload_is_refused() -> None:
    too_big = b"\0" * (MAX_SEND_SIZE + 1)
    with pytest.raises(ValueError, match="exceeds"):
        AppendRequest(1, Lsn(0), Lsn(0), Lsn(0), too_big)
    with pytest.raises(ValueError, match="exceeds"):
        WalData(Lsn(0), Lsn(0), 0, too_big)


def test_encode_refuses_what_is_not_a_protocol_message() -> None:
    with pytest.raises(TypeError, match="not a protocol message"):
        encode(cast(Any, object()))


# ---- hostile input: structure ----------------------------------------------------------------


@pytest.mark.parametrize(("msg", "direction"), SAMPLES, ids=SAMPLE_IDS)
def test_every_strict_prefix_of_a_valid_encoding_is_refused(
    msg: AnyMessage, direction: str
) -> None:
    wire = encode(msg)
    decode = DECODERS[direction]
    for n in range(len(wire)):
        err = _rpe(lambda: decode(wire[:n]))  # noqa: B023  # called at once, inside the loop
        assert err.close_code == CLOSE_PROTOCOL_ERROR


@pytest.mark.parametrize(("msg", "direction"), SAMPLES, ids=SAMPLE_IDS)
def test_trailing_bytes_are_refused(msg: AnyMessage, direction: str) -> None:
    wire = encode(msg)
    err = _rpe(lambda: DECODERS[direction](wire + b"\0"))
    assert "trailing" in str(err) or "message carries" in str(err)


@pytest.mark.parametrize("decode", DECODERS.values(), ids=DECODERS.keys())
def test_unknown_tag_is_refused(decode: Decoder) -> None:
    for tag in (b"Z", b"\0", b"\xff"):
        err = _rpe(lambda: decode(tag + b"\0" * 64))  # noqa: B023  # called at once
        assert "unknown message tag" in str(err)


@pytest.mark.parametrize(("msg", "direction"), SAMPLES, ids=SAMPLE_IDS)
def test_a_message_given_to_a_wrong_direction_decoder_is_an_unknown_tag(
    msg: AnyMessage, direction: str
) -> None:
    wire = encode(msg)
    for other, decode in DECODERS.items():
        if other != direction:
            assert "unknown message tag" in str(_rpe(lambda: decode(wire)))  # noqa: B023


@pytest.mark.parametrize("decode", DECODERS.values(), ids=DECODERS.keys())
def test_empty_input_is_refused(decode: Decoder) -> None:
    assert "empty message" in str(_rpe(lambda: decode(b"")))


@pytest.mark.parametrize("decode", DECODERS.values(), ids=DECODERS.keys())
@pytest.mark.parametrize("value", ["vote", "", 5, None, [1, 2]])
def test_non_binary_input_is_refused(decode: Decoder, value: object) -> None:
    err = _rpe(lambda: decode(cast(Any, value)))
    assert "expected a binary message" in str(err)


@pytest.mark.parametrize("decode", DECODERS.values(), ids=DECODERS.keys())
def test_a_message_over_the_size_limit_is_refused_with_too_big(decode: Decoder) -> None:
    err = _rpe(lambda: decode(b"a" + b"\0" * MAX_MESSAGE_SIZE))
    assert err.close_code == CLOSE_TOO_BIG


# ---- hostile input: WAL payloads ---------------------------------------------------------------

WAL_HEADERS: dict[str, tuple[bytes, struct.Struct, Decoder]] = {
    # tag, header layout (begin and end at positions 1 and 2 after the first field), decoder
    "AppendRequest": (b"a", struct.Struct(">QQQQQI"), decode_proposer_message),
    "WalData": (b"w", struct.Struct(">QQQqI"), decode_stream_sender_message),
}


def _wal_message(kind: str, begin: int, end: int, data: bytes, crc: int | None = None) -> bytes:
    tag, header, _ = WAL_HEADERS[kind]
    crc = crc32c(data) if crc is None else crc
    if kind == "AppendRequest":
        return tag + header.pack(1, begin, end, 0, 0, crc) + data
    return tag + header.pack(begin, end, end, 0, crc) + data


@pytest.mark.parametrize("kind", WAL_HEADERS)
def test_well_formed_wal_message_helper_decodes(kind: str) -> None:
    decoded = WAL_HEADERS[kind][2](_wal_message(kind, 100, 103, b"abc"))
    assert isinstance(decoded, AppendRequest | WalData)
    assert decoded.data == b"abc"
    assert decoded.end_lsn == 103


@pytest.mark.parametrize("kind", WAL_HEADERS)
@pytest.mark.parametrize("carried", [MAX_SEND_SIZE + 1, 0])
def test_wal_payload_over_128_kib_is_refused_with_too_big(kind: str, carried: int) -> None:
    wire = _wal_message(kind, 0, MAX_SEND_SIZE + 1, b"\0" * carried)
    err = _rpe(lambda: WAL_HEADERS[kind][2](wire))
    assert err.close_code == CLOSE_TOO_BIG
    assert "exceeds" in str(err)


@pytest.mark.parametrize("kind", WAL_HEADERS)
def test_wal_end_before_begin_is_refused(kind: str) -> None:
    err = _rpe(lambda: WAL_HEADERS[kind][2](_wal_message(kind, 100, 99, b"")))
    assert "< begin" in str(err)


@pytest.mark.parametrize("kind", WAL_HEADERS)
@pytest.mark.parametrize("carried", [b"ab", b"abcd", b""])
def test_wal_length_mismatch_is_refused(kind: str, carried: bytes) -> None:
    err = _rpe(lambda: WAL_HEADERS[kind][2](_wal_message(kind, 100, 103, carried)))
    assert "header says 3 WAL bytes" in str(err)


@pytest.mark.parametrize("kind", WAL_HEADERS)
def test_wal_payload_with_one_flipped_bit_fails_the_crc(kind: str) -> None:
    data = bytes(range(200))
    for bit in (0, 7, 8 * 100 + 3, 8 * 199 + 7):
        corrupt = bytearray(data)
        corrupt[bit // 8] ^= 1 << (bit % 8)
        wire = _wal_message(kind, 0, len(data), bytes(corrupt), crc=crc32c(data))
        err = _rpe(lambda: WAL_HEADERS[kind][2](wire))  # noqa: B023  # called at once
        assert "CRC32C mismatch" in str(err)


@pytest.mark.parametrize("kind", WAL_HEADERS)
def test_wal_crc_field_itself_corrupted_is_refused(kind: str) -> None:
    wire = _wal_message(kind, 0, 3, b"abc", crc=crc32c(b"abc") ^ 1)
    assert "CRC32C mismatch" in str(_rpe(lambda: WAL_HEADERS[kind][2](wire)))


# ---- hostile input: flags and histories ---------------------------------------------------------


@pytest.mark.parametrize("flag", [2, 0x80, 0xFF])
def test_vote_response_with_a_bad_vote_given_flag_is_refused(flag: int) -> None:
    wire = b"V" + struct.pack(">QBQQI", 1, flag, 0, 0, 0)
    assert "must be 0 or 1" in str(_rpe(lambda: decode_acceptor_message(wire)))


@pytest.mark.parametrize("flag", [2, 0xFF])
def test_keepalive_with_a_bad_reply_requested_flag_is_refused(flag: int) -> None:
    wire = b"k" + struct.pack(">QqB", 1, 2, flag)
    assert "must be 0 or 1" in str(_rpe(lambda: decode_stream_sender_message(wire)))


@pytest.mark.parametrize("flag", [2, 0xFF])
def test_status_update_with_a_bad_reply_requested_flag_is_refused(flag: int) -> None:
    wire = b"r" + struct.pack(">QQQqB", 1, 2, 3, 4, flag)
    assert "must be 0 or 1" in str(_rpe(lambda: decode_stream_reader_message(wire)))


def _elected_wire(entries: list[tuple[int, int]], *, count: int | None = None) -> bytes:
    n = len(entries) if count is None else count
    body = b"".join(struct.pack(">QQ", t, lsn) for t, lsn in entries)
    return b"e" + struct.pack(">QQI", 9, 0x1000, n) + body


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([(2, 10), (1, 20)], "terms must increase"),
        ([(2, 10), (2, 20)], "terms must increase"),
        ([(1, 20), (2, 10)], "LSNs must not decrease"),
    ],
)
def test_proposer_elected_with_an_invalid_history_is_refused(
    entries: list[tuple[int, int]], why: str
) -> None:
    err = _rpe(lambda: decode_proposer_message(_elected_wire(entries)))
    assert why in str(err)
    assert err.close_code == CLOSE_PROTOCOL_ERROR


def test_vote_response_with_an_invalid_history_is_refused() -> None:
    wire = b"V" + struct.pack(">QBQQI", 1, 1, 0, 0, 2) + struct.pack(">QQQQ", 5, 1, 4, 2)
    assert "terms must increase" in str(_rpe(lambda: decode_acceptor_message(wire)))


def test_history_entry_count_over_the_limit_is_refused_with_too_big() -> None:
    err = _rpe(lambda: decode_proposer_message(_elected_wire([], count=MAX_HISTORY_ENTRIES + 1)))
    assert err.close_code == CLOSE_TOO_BIG


def test_history_entry_count_larger_than_the_message_is_refused() -> None:
    err = _rpe(lambda: decode_proposer_message(_elected_wire([(1, 1)], count=2)))
    assert "truncated" in str(err)
    assert err.close_code == CLOSE_PROTOCOL_ERROR


# ---- fuzzing -----------------------------------------------------------------------------------

RESULT_TYPES: dict[str, tuple[type, ...]] = {
    "proposer": (Greeting, VoteRequest, ProposerElected, AppendRequest),
    "acceptor": (AcceptorGreeting, VoteResponse, AppendResponse),
    "stream_sender": (WalData, Keepalive),
    "stream_reader": (StatusUpdate,),
}


def _decode_all_or_refuse(data: bytes) -> None:
    for direction, decode in DECODERS.items():
        try:
            msg = decode(data)
        except RemoteProtocolError:
            continue
        assert isinstance(msg, RESULT_TYPES[direction])
        assert encode(msg) == data  # anything accepted is exactly a canonical encoding


@given(st.binary(max_size=512))
@example(b"e" + struct.pack(">QQI", 1, 1, 0xFFFF_FFFF))
@example(b"a" + struct.pack(">QQQQQI", 1, 2**64 - 1, 0, 0, 0, 0))
def test_arbitrary_bytes_only_ever_raise_remote_protocol_error(data: bytes) -> None:
    _decode_all_or_refuse(data)


@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_valid_messages_only_ever_raise_remote_protocol_error(
    sample: tuple[AnyMessage, str], data: st.DataObject
) -> None:
    wire = bytearray(encode(sample[0]))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    _decode_all_or_refuse(bytes(wire))


@given(
    st.one_of(
        proposer_messages, acceptor_messages, stream_sender_messages, stream_reader_messages
    ),
    st.data(),
)
def test_truncated_or_extended_random_messages_are_refused(
    msg: AnyMessage, data: st.DataObject
) -> None:
    wire = encode(msg)
    cut = data.draw(st.integers(0, len(wire) - 1))
    extra = data.draw(st.binary(min_size=1, max_size=8))
    for broken in (wire[:cut], wire + extra):
        for decode in DECODERS.values():
            with pytest.raises(RemoteProtocolError):
                decode(broken)
