"""``PgConnection.send_parts`` (N3): vectored writes put the parts on the wire in order,
as if joined, over a real socket that fills up (partial sends), and over a plain stream."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from safekeeper_recovery.transport._pg_connection import ClientGone, PgConnection


def _parts() -> list[bytes | memoryview]:
    # More parts than one sendmsg takes, empty ones, views into a big buffer, and more
    # bytes than a loopback socket buffers, so sends come back partial.
    big = bytes(i % 253 for i in range(3 << 20))
    parts: list[bytes | memoryview] = []
    for i in range(700):
        parts.append(i.to_bytes(4, "big"))
        parts.append(b"" if i % 7 == 0 else memoryview(big)[i * 4000:i * 4000 + 4000 + i])
    parts.append(memoryview(big))
    return parts


async def _receive_all(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        data = await stream.receive_some(65536)
        assert data, "the sender closed early"
        got += data
    return bytes(got)


async def test_send_parts_over_a_socket_is_the_joined_bytes() -> None:
    a, b = trio.socket.socketpair()
    sender, receiver = trio.SocketStream(a), trio.SocketStream(b)
    conn = PgConnection(sender, "pair", max_message=1 << 20, send_timeout=30)
    parts = _parts()
    expected = b"".join(parts)
    got = b""

    async def receive() -> None:
        nonlocal got
        got = await _receive_all(receiver, len(expected))

    async with sender, receiver:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                await conn.send_parts(parts)
    assert got == expected
    assert conn.sent_bytes == len(expected)


async def test_send_parts_over_a_plain_stream_joins_them() -> None:
    sender, receiver = trio.testing.memory_stream_pair()
    conn = PgConnection(sender, "memory", max_message=1 << 20)
    parts = _parts()[:50]
    expected = b"".join(parts)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.send_parts, parts)
            got = await _receive_all(receiver, len(expected))
    assert got == expected


async def test_send_parts_to_a_closed_peer_is_client_gone() -> None:
    a, b = trio.socket.socketpair()
    b.close()
    async with trio.SocketStream(a) as stream:
        conn = PgConnection(stream, "pair", max_message=1 << 20)
        with trio.fail_after(10), pytest.raises(ClientGone):
            await conn.send_parts([b"x" * 1000, memoryview(b"y" * 1000)])
