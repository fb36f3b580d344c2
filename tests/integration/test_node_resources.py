"""Issue 20, defect 3: running out of file descriptors must never break a timeline.

A real ``serve`` process started with the soft open-files limit many systems give (1,024)
and the node's default limits: 2,000 idle client connections on its two ports, then a
proposer on another timeline writes normally and no timeline is broken.
"""

from __future__ import annotations

import base64
import os
import re
import resource
from pathlib import Path

import httpx
import pytest
import trio

from safekeeper_recovery.core import TenantTimelineId
from safekeeper_recovery.proposer import LostQuorumError
from safekeeper_recovery.testing import NodeProcess, make_ttid, wait_until

from .hostile_support import one_node, ttid_url, write_wal

IDLE_STREAMS = 1000
"""Idle ``wal_stream`` readers (handshake done, never read): they stay open."""
IDLE_WAL_TCP = 500
"""TCP connections to the WAL port that never send a byte."""
IDLE_HTTP_TCP = 500
"""TCP connections to the HTTP port that never send a byte."""
CONTROL, OTHER = make_ttid(1), make_ttid(2)
LOW_NOFILE = 64
"""A low hard open-files limit (the issue's node broke with 27 idle readers under one)."""


async def idle_stream(port: int) -> trio.SocketStream:
    """A ``wal_stream`` of committed WAL on CONTROL whose reader never reads."""
    stream = await try_idle_stream(port)
    assert isinstance(stream, trio.SocketStream), f"refused: {stream!r}"
    return stream


async def try_idle_stream(port: int) -> trio.SocketStream | bytes:
    """:func:`idle_stream`, or the whole answer (head and body) of a node that refused it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        path = f"{ttid_url(CONTROL)}/wal_stream?start_lsn=0/1000000"
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = await stream.receive_some(4096)
            assert chunk, f"closed during the handshake: {answer!r}"
            answer += chunk
        if answer.startswith(b"HTTP/1.1 101"):
            return stream
        # A refusal: read its body (the node may reset the connection right after it).
        head, _, body = answer.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        assert length is not None, answer
        with trio.fail_after(10):
            while len(body) < int(length.group(1)):
                chunk = await stream.receive_some(4096)
                assert chunk, f"closed inside the answer: {answer!r}"
                body += chunk
        await trio.aclose_forcefully(stream)
        return head + b"\r\n\r\n" + body
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


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


async def write_wal_once_admitted(node: NodeProcess, ttid: TenantTimelineId, nbytes: int
                                  ) -> None:
    """:func:`write_wal`, run again while the node refuses the proposer's connection as one
    too many: the node frees a closed client's slot once it sees the close, and a proposer
    that cannot reach a quorum for its first election stops at once (it does not wait)."""
    with trio.fail_after(15):
        while True:
            try:
                await write_wal(node, ttid, nbytes)
                return
            except LostQuorumError as e:
                if "HTTP 503: {\"error\": \"too many connections" not in str(e):
                    raise
            await trio.sleep(0.05)  # poll interval for the node to see the close


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


@pytest.mark.slow
async def test_under_a_low_hard_open_files_limit_idle_readers_are_shed_and_no_timeline_breaks(
    tmp_path: Path,
) -> None:
    # The node cannot raise its soft limit past the hard one: it caps client connections at
    # half the descriptors, answers one more with 503 and keeps the rest for its timelines.
    cap = LOW_NOFILE // 2
    held: list[trio.SocketStream] = []
    try:
        async with one_node(tmp_path, [CONTROL, OTHER], nofile=LOW_NOFILE,
                            nofile_hard=LOW_NOFILE) as node:
            refusal = b""
            with trio.fail_after(60):
                # Until refused with every slot ours: a refusal before that is the set-up
                # client's connection, whose close the node has not seen yet.
                while len(held) < cap or not refusal:
                    answer = await try_idle_stream(node.wal_port)
                    if isinstance(answer, trio.SocketStream):
                        held.append(answer)
                        assert len(held) <= cap, f"more than {cap} connections admitted"
                        continue
                    refusal = answer
                    assert refusal.startswith(b"HTTP/1.1 503 "), refusal
                    if len(held) < cap:
                        await trio.sleep(0.05)  # poll interval for that close
            assert f"too many connections: this node holds {cap}".encode() in refusal

            # One slot free, all the others held by idle readers: a proposer on another
            # timeline is elected (a vote persisted) and writes a segment's worth of WAL.
            await trio.aclose_forcefully(held.pop())
            await write_wal_once_admitted(node, OTHER, 1 << 20)

            for stream in held:
                await trio.aclose_forcefully(stream)
            held.clear()

            async def no_timeline_broken() -> bool:
                async with httpx.AsyncClient(base_url=node.http_url, timeout=10) as http:
                    r = await http.get("/v1/status")
                if r.status_code == 503:  # the node has not seen every close yet
                    return False
                assert r.status_code == 200, r.text
                assert r.json()["broken_count"] == 0, r.text
                return True

            await wait_until(no_timeline_broken, 10, message="the node to answer its status")
            await write_wal(node, CONTROL)  # the timeline the readers held takes WAL too
            assert "Too many open files" not in node.stderr()
            assert "refusing connections" in node.stderr()  # the refusal was logged
    finally:
        for stream in held:
            await trio.aclose_forcefully(stream)
