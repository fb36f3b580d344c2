"""Codec fuzzing beyond tests/core/test_codec.py: hostile length and count fields, frames
over the size limit, several messages in one frame, every buffer type, text.

Every decode either returns a message that re-encodes to exactly the input, or raises
``RemoteProtocolError`` whose close-code hint is 1002 (malformed) or 1009 (too big).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
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
    TermLsn,
    TimelineId,
    VoteRequest,
    VoteResponse,
    WalData,
    decode_acceptor_message,
    decode_proposer_message,
    decode_stream_reader_message,
    decode_stream_sender_message,
    encode,
)

from .conftest import FUZZ

AnyMessage = ProposerMessage | AcceptorMessage | StreamSenderMessage | StreamReaderMessage
Decoder = Callable[[bytes | bytearray | memoryview], object]
DECODERS: list[Decoder] = [
    decode_proposer_message,
    decode_acceptor_message,
    decode_stream_sender_message,
    decode_stream_reader_message,
]
U32, U64 = 2**32 - 1, 2**64 - 1
HISTORY = TermHistory([TermLsn(0, Lsn(0x100)), TermLsn(3, Lsn(0x200))])
SAMPLES: list[AnyMessage] = [
    Greeting(TenantId(bytes(16)), TimelineId(bytes(range(16))), 150000, 7, 1 << 24),
    VoteRequest(5),
    ProposerElected(3, Lsn(0x200), HISTORY),
    AppendRequest(3, Lsn(0x200), Lsn(0x100), Lsn(0), b"wal bytes"),
    AcceptorGreeting(NodeId(2), 3),
    VoteResponse(3, True, Lsn(0x200), Lsn(0), HISTORY),
    AppendResponse(3, Lsn(0x209), Lsn(0x100)),
    WalData(Lsn(0x200), Lsn(0x300), -1, b"wal bytes"),
    Keepalive(Lsn(0x300), 12345, True),
    StatusUpdate(Lsn(1), Lsn(2), Lsn(3), 4, False),
]
# Where each message keeps a length or count field (offset after the tag, struct format).
LENGTH_FIELDS: dict[type, list[tuple[int, str]]] = {
    ProposerElected: [(16, ">I")],  # n history entries
    VoteResponse: [(25, ">I")],  # n history entries
    AppendRequest: [(8, ">Q"), (16, ">Q")],  # begin, end: end - begin is the payload length
    WalData: [(0, ">Q"), (8, ">Q")],  # start, end
}
HOSTILE_COUNTS = st.sampled_from(
    [0, 1, 2, MAX_HISTORY_ENTRIES - 1, MAX_HISTORY_ENTRIES, MAX_HISTORY_ENTRIES + 1,
     MAX_SEND_SIZE, MAX_SEND_SIZE + 1, 2**31, U32]
) | st.integers(0, U32)


def decode_or_refuse(data: bytes | bytearray | memoryview) -> list[AnyMessage]:
    """Decode ``data`` in every direction; return what was accepted."""
    accepted: list[AnyMessage] = []
    for decode in DECODERS:
        try:
            msg = decode(data)
        except RemoteProtocolError as e:
            refusal = e
        else:
            assert isinstance(msg, AnyMessage)
            assert encode(msg) == bytes(data), "an accepted message re-encodes to its input"
            accepted.append(msg)
            continue
        assert refusal.close_code in (1002, 1009), refusal
        assert str(refusal), "a refusal must say why"
    assert len(accepted) <= 1, "tags are distinct per direction"
    return accepted


@settings(FUZZ, max_examples=300)
@given(st.sampled_from(SAMPLES), st.data())
def test_hostile_length_and_count_fields_are_refused_or_exact(
    sample: AnyMessage, data: st.DataObject
) -> None:
    wire = bytearray(encode(sample))
    fields = LENGTH_FIELDS.get(type(sample), [])
    if not fields:
        # messages without length fields: a hostile integer in any u32-aligned spot
        pos = data.draw(st.integers(1, max(1, len(wire) - 4)))
        fields = [(pos - 1, ">I")]
    offset, fmt = data.draw(st.sampled_from(fields))
    value = data.draw(HOSTILE_COUNTS if fmt == ">I" else st.integers(0, U64))
    struct.pack_into(fmt, wire, 1 + offset, value)
    decode_or_refuse(bytes(wire))


@settings(FUZZ, max_examples=100)
@given(st.lists(st.sampled_from(SAMPLES), min_size=2, max_size=4))
def test_several_messages_in_one_frame_are_refused(messages: list[AnyMessage]) -> None:
    frame = b"".join(encode(m) for m in messages)
    assert decode_or_refuse(frame) == []


@settings(FUZZ, max_examples=200)
@given(st.sampled_from(SAMPLES), st.data())
def test_every_buffer_type_decodes_alike(sample: AnyMessage, data: st.DataObject) -> None:
    wire = bytearray(encode(sample))
    if data.draw(st.booleans()):
        wire[data.draw(st.integers(0, len(wire) - 1))] ^= data.draw(st.integers(1, 255))
    as_bytes = decode_or_refuse(bytes(wire))
    assert decode_or_refuse(wire) == as_bytes
    assert decode_or_refuse(memoryview(wire)) == as_bytes
    assert decode_or_refuse(memoryview(b"\x00" + bytes(wire))[1:]) == as_bytes


@settings(FUZZ, max_examples=50)
@given(st.text(max_size=64))
@example("g" + "\x00" * 44)
def test_text_is_refused_as_not_binary(text: str) -> None:
    for decode in DECODERS:
        with pytest.raises(RemoteProtocolError, match="binary"):
            decode(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("tag", [b"g", b"v", b"e", b"a", b"G", b"V", b"A", b"w", b"k", b"r"])
def test_a_frame_over_the_size_limit_is_refused_as_too_big(tag: bytes) -> None:
    frame = tag + bytes(MAX_MESSAGE_SIZE)
    for decode in DECODERS:
        with pytest.raises(RemoteProtocolError, match="too large") as info:
            decode(frame)
        assert info.value.close_code == 1009


def test_a_history_count_over_the_limit_is_refused_as_too_big_before_reading_it() -> None:
    frame = b"e" + struct.pack(">QQI", 1, 0, MAX_HISTORY_ENTRIES + 1)
    with pytest.raises(RemoteProtocolError, match="too long") as info:
        decode_proposer_message(frame)
    assert info.value.close_code == 1009


def test_a_payload_length_over_the_limit_is_refused_as_too_big() -> None:
    frame = b"a" + struct.pack(">QQQQQI", 1, 0, MAX_SEND_SIZE + 1, 0, 0, 0)
    with pytest.raises(RemoteProtocolError, match="exceeds") as info:
        decode_proposer_message(frame)
    assert info.value.close_code == 1009
