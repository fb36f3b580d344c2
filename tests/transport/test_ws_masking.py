"""The fast WebSocket masker is byte-for-byte wsproto's, and wsproto really uses it."""

from __future__ import annotations

import random

import pytest
import wsproto.frame_protocol as frame_protocol
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

from safekeeper_recovery.transport._ws_masking import FastXorMasker, install, original_masker


@pytest.mark.parametrize("seed", range(20))
def test_fast_masker_matches_wsprotos_across_chunks(seed: int) -> None:
    rng = random.Random(seed)
    key = rng.randbytes(4)
    ours, theirs = FastXorMasker(key), original_masker()(key)
    # One frame's payload arrives in chunks of any size: the key must continue across them.
    for _ in range(6):
        chunk = rng.randbytes(rng.choice([0, 1, 2, 3, 5, 4096, 4099, rng.randrange(1, 70_000)]))
        assert ours.process(chunk) == theirs.process(bytearray(chunk))


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
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="h", target="/")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    payload = random.Random(2).randbytes(200_001)
    wire = client.send(BytesMessage(data=payload))
    assert payload not in wire  # it went out masked
    received = bytearray()
    for i in range(0, len(wire), 65_537):  # delivered in odd pieces
        server.receive_data(wire[i : i + 65_537])
        for event in server.events():
            assert isinstance(event, BytesMessage)
            received += event.data
    assert received == payload
