"""The fast WebSocket masker and frame builder are byte-for-byte wsproto's, and wsproto
really uses them."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
import wsproto.frame_protocol as frame_protocol
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

from safekeeper_recovery.transport._ws_fastpath import (
    WHOLE_FRAME_LIMIT,
    FastXorMasker,
    install,
    original_masker,
    original_serialize_frame,
    serialize_frame,
)


@pytest.mark.parametrize("seed", range(20))
def test_fast_masker_matches_wsprotos_across_chunks(seed: int) -> None:
    rng = random.Random(seed)
    key = rng.randbytes(4)
    ours, theirs = FastXorMasker(key), original_masker()(key)
    # One frame's payload arrives in chunks of any size: the key must continue across them.
    for _ in range(6):
        chunk = rng.randbytes(rng.choice([0, 1, 2, 3, 5, 4096, 4099, rng.randrange(1, 70_000)]))
        # Alternate bytes (copied) and bytearray (masked in place) inputs.
        mine = chunk if len(chunk) % 2 else bytearray(chunk)
        assert ours.process(mine) == theirs.process(bytearray(chunk))


def test_a_bytearray_is_masked_in_place() -> None:
    data = bytearray(random.Random(3).randbytes(10_001))
    original = bytes(data)
    assert FastXorMasker(b"abcd").process(data) is data
    assert bytes(data) == bytes(original_masker()(b"abcd").process(bytearray(original)))


@pytest.mark.parametrize(("size", "client", "fin", "opcode"), [
    (511, True, True, frame_protocol.Opcode.BINARY),      # wsproto's own path
    (512, True, True, frame_protocol.Opcode.BINARY),      # two-byte length
    (65_535, False, True, frame_protocol.Opcode.BINARY),
    (65_536, True, False, frame_protocol.Opcode.BINARY),  # eight-byte length, not final
    (1_048_603, True, True, frame_protocol.Opcode.CONTINUATION),
    (1_048_603, False, True, frame_protocol.Opcode.TEXT),
    (700, True, True, frame_protocol.Opcode.PING),        # control: wsproto's path
])
def test_fast_frames_equal_wsprotos_with_the_same_key(
    monkeypatch: pytest.MonkeyPatch, size: int, client: bool, fin: bool,
    opcode: frame_protocol.Opcode,
) -> None:
    monkeypatch.setattr(os, "urandom", lambda n: b"\x9a\x01\xfe\x37"[:n])
    proto = frame_protocol.FrameProtocol(client=client, extensions=[])
    payload = random.Random(size).randbytes(size)
    original: Any = original_serialize_frame()
    try:
        theirs = original(proto, opcode, payload, fin)
    except ValueError:  # wsproto refuses a control frame this long; so must we
        with pytest.raises(ValueError, match="control"):
            serialize_frame(proto, opcode, payload, fin)
        return
    assert serialize_frame(proto, opcode, payload, fin) == theirs


def test_masking_twice_restores_the_data() -> None:
    data = random.Random(1).randbytes(131_075)
    masked = FastXorMasker(b"\x01\x02\x03\x04").process(data)
    assert masked != data
    assert FastXorMasker(b"\x01\x02\x03\x04").process(masked) == data


def test_a_key_must_have_four_bytes() -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        FastXorMasker(b"\x01\x02\x03")


def test_installed_masker_carries_a_masked_frame_end_to_end() -> None:
    install()
    masker: object = frame_protocol.XorMaskerSimple
    assert masker is FastXorMasker
    builder: object = frame_protocol.FrameProtocol._serialize_frame
    assert builder is serialize_frame
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="h", target="/")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    payload = random.Random(2).randbytes(200_001)
    wire = client.send(BytesMessage(data=payload))
    assert payload not in wire  # it went out masked
    events = []
    for i in range(0, len(wire), 65_537):  # delivered in odd pieces
        server.receive_data(wire[i : i + 65_537])
        events += list(server.events())
    # Handed on whole, as one event (nothing for trio-websocket to join).
    assert len(events) == 1
    assert isinstance(events[0], BytesMessage)
    assert events[0].data == payload
    assert events[0].message_finished


def test_a_frame_above_the_whole_frame_limit_still_streams_in_pieces() -> None:
    # So trio-websocket's message size limit fires after a piece, not after buffering it.
    install()
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="h", target="/")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    payload = random.Random(4).randbytes(WHOLE_FRAME_LIMIT + 1)
    wire = client.send(BytesMessage(data=payload))
    server.receive_data(wire[: 1 << 20])
    [first] = server.events()
    assert isinstance(first, BytesMessage)
    assert not first.message_finished
    assert payload.startswith(first.data)


def test_importing_the_library_patches_nothing_and_opting_in_does() -> None:
    """Run in a fresh interpreter: importing never patches wsproto (a library must not);
    ``enable_wsproto_fastpath()`` does, on the wsproto this project supports."""
    import subprocess
    import sys

    code = (
        "import wsproto.frame_protocol as fp\n"
        "orig = fp.XorMaskerSimple\n"
        "import safekeeper_recovery.recovery, safekeeper_recovery.transport\n"
        "import safekeeper_recovery.node, safekeeper_recovery.proposer\n"
        "print(fp.XorMaskerSimple is orig)\n"
        "from safekeeper_recovery.transport import enable_wsproto_fastpath\n"
        "print(enable_wsproto_fastpath(), fp.XorMaskerSimple is orig)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split() == ["True", "True", "False"], out.stderr


def test_an_unsupported_wsproto_is_left_alone(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    import wsproto

    from safekeeper_recovery.transport import _ws_fastpath

    monkeypatch.setattr(frame_protocol, "XorMaskerSimple", _ws_fastpath.original_masker())
    monkeypatch.setattr(wsproto, "__version__", "9.0.0")
    assert not _ws_fastpath.install()
    assert frame_protocol.XorMaskerSimple is _ws_fastpath.original_masker()
    assert "wsproto 9.0.0 is not one the WebSocket fast path was written for" in caplog.text
