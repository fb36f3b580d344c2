"""``NetworkDonorConnector``'s status requests over real loopback sockets: one keep-alive
connection per donor when pooled (rule 2), one per request otherwise (rule 1), a donor
that dropped an idle connection is asked again on a new one, ``aclose`` closes them."""

from __future__ import annotations

import functools
import json

import attrs
import trio

from safekeeper_recovery.core import Lsn, NodeId, PeerInfo, Term
from safekeeper_recovery.testing import make_ttid
from safekeeper_recovery.transport import NetworkDonorConnector

TTID = make_ttid(1)
BODY = json.dumps({"acceptor_state": {"term": 3, "term_history": [
    {"term": 3, "lsn": "0/1000000"}]}}).encode()


@attrs.define
class StatusServer:
    """A minimal HTTP/1.1 server answering every request with a donor status document."""

    close_after_answer: bool = False
    connections: int = 0
    requests: int = 0
    open_connections: int = 0
    changed: trio.Event = attrs.Factory(trio.Event)
    port: int = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        self.open_connections += 1
        try:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                _, buf = buf.split(b"\r\n\r\n", 1)
                self.requests += 1
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(BODY)}\r\n\r\n".encode() + BODY)
                if self.close_after_answer:
                    return  # like a donor restarting: the idle connection just goes away
        finally:
            self.open_connections -= 1
            await stream.aclose()
            self.changed.set()
            self.changed = trio.Event()

    def donor(self) -> PeerInfo:
        return PeerInfo(node_id=NodeId(2), term=Term(3), last_log_term=Term(3),
                        flush_lsn=Lsn(0x2000000), commit_lsn=Lsn(0x2000000),
                        http_addr=f"http://127.0.0.1:{self.port}",
                        wal_addr=f"ws://127.0.0.1:{self.port}", received_at=0.0)


async def serve(nursery: trio.Nursery, server: StatusServer) -> None:
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    server.port = listeners[0].socket.getsockname()[1]


async def test_a_pooled_connector_asks_one_donor_over_one_connection() -> None:
    server = StatusServer()
    async with trio.open_nursery() as nursery:
        await serve(nursery, server)
        conn = NetworkDonorConnector(pooled=True, http_timeout=5.0)
        for _ in range(5):
            status = await conn.fetch_status(server.donor(), TTID)
            assert status.term == 3
        assert (server.requests, server.connections) == (5, 1)
        await conn.aclose()
        with trio.fail_after(5):
            while server.open_connections:
                await server.changed.wait()
        nursery.cancel_scope.cancel()


async def test_an_unpooled_connector_connects_per_request() -> None:
    server = StatusServer()
    async with trio.open_nursery() as nursery:
        await serve(nursery, server)
        conn = NetworkDonorConnector(http_timeout=5.0)
        for _ in range(3):
            assert (await conn.fetch_status(server.donor(), TTID)).term == 3
        assert (server.requests, server.connections) == (3, 3)
        nursery.cancel_scope.cancel()


async def test_a_pooled_connection_the_donor_dropped_is_replaced() -> None:
    server = StatusServer(close_after_answer=True)
    async with trio.open_nursery() as nursery:
        await serve(nursery, server)
        conn = NetworkDonorConnector(pooled=True, http_timeout=5.0)
        try:
            for _ in range(4):
                assert (await conn.fetch_status(server.donor(), TTID)).term == 3
                with trio.fail_after(5):  # the donor has dropped it before the next ask
                    while server.open_connections:
                        await server.changed.wait()
        finally:
            await conn.aclose()
        assert (server.requests, server.connections) == (4, 4)
        nursery.cancel_scope.cancel()
