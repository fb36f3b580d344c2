"""Hostile input against real ``serve`` processes, one test per port: every bad request gets
a clear refusal, and a concurrent well-behaved proposer finishes undisturbed."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import struct

import httpx
import pytest
import trio

from safekeeper_recovery.core import AppendRequest, Greeting, Lsn
from safekeeper_recovery.testing import Cluster
from safekeeper_recovery.transport import WalPushClosed, open_wal_push

from .conftest import ClusterFactory
from .recovery_support import propose_args
from .test_node_propose import TTID

TENANT = str(TTID.tenant_id)
TIMELINE = str(TTID.timeline_id)


async def upgrade(port: int, path: str) -> tuple[int, trio.SocketStream, bytes]:
    """Send a WebSocket upgrade request by hand; return (HTTP status, stream, rest)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await stream.send_all(request.encode())
    data = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, stream, rest


def frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One masked client frame (RFC 6455 §5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


async def close_code(stream: trio.SocketStream, rest: bytes) -> int:
    """Read server frames until a close frame; return its code."""
    data = rest
    with trio.fail_after(10):
        while True:
            if len(data) >= 2:
                n = data[1] & 0x7F
                off = 2
                if n == 126:
                    n, off = struct.unpack("!H", data[2:4])[0], 4
                elif n == 127:
                    n, off = struct.unpack("!Q", data[2:10])[0], 10
                if len(data) >= off + n:
                    if data[0] & 0x0F == 0x8:
                        return int(struct.unpack("!H", data[off : off + 2])[0])
                    data = data[off + n :]
                    continue
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise AssertionError("connection ended without a close frame")
            data += chunk


async def well_behaved_proposer(cluster: Cluster) -> None:
    result = await cluster.propose(*propose_args(cluster, TTID, "8MiB", "--seed", "7"))
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
async def test_wal_port_refuses_hostile_input_and_keeps_serving(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    await cluster.start()
    await cluster.create_timeline(TTID)
    port = int(cluster[1].wal_url.rsplit(":", 1)[1])
    base = f"/v1/tenant/{TENANT}/timeline/{TIMELINE}"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(well_behaved_proposer, cluster)
        refused = {
            f"/v1/tenant/{TENANT}/timeline/../wal_push": 400,
            f"/v1/tenant/{'a' * 31}/timeline/{TIMELINE}/wal_push": 400,
            f"/v1/tenant/{'a' * 33}/timeline/{TIMELINE}/wal_push": 400,
            f"{base}/wal_stream?start_lsn=nope": 400,
            f"{base}/wal_stream?start_lsn=0/1000000&term=-1": 400,
            f"{base}/wal_stream?start_lsn=0/1000000&x=1": 400,
            f"/v1/tenant/{'b' * 32}/timeline/{TIMELINE}/wal_push": 404,
            f"{base}/no_such_endpoint": 400,
        }
        for path, expected in refused.items():
            status, stream, _ = await upgrade(port, path)
            await stream.aclose()
            assert status == expected, path
        # Garbage, a text frame and an oversized frame after a good handshake.
        for payload, opcode, code in [
            (b"\xff garbage", 0x2, 1002),
            (b"hello", 0x1, 1003),
            (b"\x00" * (4 << 20), 0x2, 1009),
        ]:
            status, stream, rest = await upgrade(port, f"{base}/wal_push")
            assert status == 101
            # The server may close while we are still sending the big frame.
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(frame(payload, opcode))
            assert await close_code(stream, rest) == code
            await stream.aclose()
        # Messages out of order: an append before any election is refused by the acceptor.
        async with open_wal_push(cluster[1].wal_url, TTID.tenant_id, TTID.timeline_id) as c:
            await c.send(Greeting(TTID.tenant_id, TTID.timeline_id))
            await c.receive()
            await c.send(AppendRequest(99, Lsn(0x1000000), Lsn(0), Lsn(0), b"x"))
            with pytest.raises(WalPushClosed) as refused_append:
                await c.receive()
        assert refused_append.value.code == 4009
    # The well-behaved proposer finished (the nursery re-raises if it failed) and the
    # node still answers.
    assert await cluster.flush_lsn(1, TTID) >= Lsn(0x1000000) + (8 << 20)


@pytest.mark.slow
async def test_http_port_refuses_hostile_input_and_keeps_serving(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    await cluster.start()
    await cluster.create_timeline(TTID)
    url = cluster[1].http_url
    tl = f"/v1/tenant/{TENANT}/timeline/{TIMELINE}"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(well_behaved_proposer, cluster)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            cases: list[tuple[str, str, bytes | None, int]] = [
                ("GET", f"/v1/tenant/{'a' * 31}/timeline/{TIMELINE}", None, 400),
                ("GET", f"/v1/tenant/{'a' * 33}/timeline/{TIMELINE}", None, 400),
                ("GET", f"/v1/tenant/{TENANT}/timeline/%2e%2e", None, 400),
                ("GET", f"/v1/tenant/{'c' * 32}/timeline/{TIMELINE}", None, 404),
                ("GET", f"{tl}/digest?from_lsn=zz&until_lsn=0/1000000", None, 400),
                ("GET", f"{tl}/digest?from_lsn=0/2000000&until_lsn=0/1000000", None, 400),
                ("POST", f"/v1/tenant/{TENANT}/timeline", b"{not json", 400),
                ("POST", f"/v1/tenant/{TENANT}/timeline",
                 json.dumps({"timeline_id": TIMELINE, "start_lsn": 5}).encode(), 400),
                ("POST", "/v1/peer_info", b"[" * 100_000, 400),
            ]
            for method, path, body, expected in cases:
                response = await http.request(method, path, content=body)
                assert response.status_code == expected, (method, path, response.text)
                assert "error" in response.json(), response.text
        # An oversized body is refused from its Content-Length, before it is read (raw
        # TCP: an HTTP client library would keep trying to send the rest).
        port = int(url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(
            f"POST /v1/peer_info HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {17 << 20}\r\n\r\n{{".encode()
        )
        with trio.fail_after(10):
            head = await stream.receive_some(65536)
        await stream.aclose()
        assert head.split(b" ", 2)[1] == b"413", head
    assert await cluster.flush_lsn(1, TTID) >= Lsn(0x1000000) + (8 << 20)
