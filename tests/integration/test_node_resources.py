"""Issue 20, defect 3: running out of file descriptors must never break a timeline.

A real ``serve`` process started with the soft open-files limit many systems give (1,024)
and the node's default limits: 2,000 idle client connections on its two ports, then a
proposer on another timeline writes normally and no timeline is broken.
"""

from __future__ import annotations

import base64
import os
import resource
from pathlib import Path

import httpx
import pytest
import trio

from .harness import NodeProcess
from .hostile_support import one_node, timeline, ttid_url, write_wal

IDLE_STREAMS = 1000
"""Idle ``wal_stream`` readers (handshake done, never read): they stay open."""
IDLE_WAL_TCP = 500
"""TCP connections to the WAL port that never send a byte."""
IDLE_HTTP_TCP = 500
"""TCP connections to the HTTP port that never send a byte."""
CONTROL, OTHER = timeline(1), timeline(2)


async def idle_stream(port: int) -> trio.SocketStream:
    """A ``wal_stream`` of committed WAL on CONTROL whose reader never reads."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    path = f"{ttid_url(CONTROL)}/wal_stream?start_lsn=0/1000000"
    await stream.send_all(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some(4096)
        assert chunk, f"closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return stream


@pytest.mark.slow
async def test_2000_idle_connections_leave_another_timeline_writing_normally(
    tmp_path: Path,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 3 * (IDLE_STREAMS + IDLE_WAL_TCP + IDLE_HTTP_TCP):
        pytest.skip(f"the hard open-files limit ({hard}) cannot hold both ends")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds 2,000 too
    held: list[trio.SocketStream] = []
    try:
        async with one_node(tmp_path, [CONTROL, OTHER], nofile=1024) as node:
            await open_idle(node, held)
            await write_wal(node, OTHER, 1 << 20)
            async with httpx.AsyncClient(base_url=node.http_url, timeout=10) as http:
                status = (await http.get("/v1/status")).json()
                assert status["broken_count"] == 0, status
                control = (await http.get(ttid_url(CONTROL))).json()
            assert len(control["walsenders"]) == IDLE_STREAMS  # still open, still idle
    finally:
        for stream in held:
            await trio.aclose_forcefully(stream)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def open_idle(node: NodeProcess, held: list[trio.SocketStream]) -> None:
    limiter = trio.CapacityLimiter(50)  # a burst of connects, not a SYN flood

    async def stream_one() -> None:
        async with limiter:
            held.append(await idle_stream(node.wal_port))

    async def tcp_one(port: int) -> None:
        async with limiter:
            held.append(await trio.open_tcp_stream("127.0.0.1", port))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(IDLE_STREAMS):
                nursery.start_soon(stream_one)
            for _ in range(IDLE_WAL_TCP):
                nursery.start_soon(tcp_one, node.wal_port)
            for _ in range(IDLE_HTTP_TCP):
                nursery.start_soon(tcp_one, node.http_port)
    assert len(held) == IDLE_STREAMS + IDLE_WAL_TCP + IDLE_HTTP_TCP
