"""A small fault-injecting TCP proxy (trio) in front of a real HTTP server: the archive
fault drills put it between a node and SeaweedFS's S3 port.

Modes, switched with :meth:`FaultProxy.set_mode` (which also drops every open connection,
so that kept-alive client connections meet the new mode at once):

* ``pass``: bytes relayed both ways, untouched;
* ``server_error``: every request is answered ``503 Service Unavailable`` with an S3
  error body (``SlowDown``), and the connection closed; the server never sees it;
* ``reset``: every connection is closed as soon as it is accepted (a crashed or
  firewalled server: the client sees its connection dropped);
* ``slow``: every request waits ``delay`` seconds before it is relayed;
* ``stall_put``: the first bytes of every ``PUT`` are relayed, the rest held until the
  connection ends (an upload stuck half-way); :attr:`FaultProxy.put_stalled` is set then.
"""

from __future__ import annotations

from collections import Counter
from typing import Final, Literal

import trio

__all__ = ["FaultProxy", "Mode"]

Mode = Literal["pass", "server_error", "reset", "slow", "stall_put"]
_METHODS: Final = (b"GET ", b"PUT ", b"HEAD ", b"POST ", b"DELETE ")
_ERROR_BODY: Final = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                      b"<Message>injected by the fault proxy</Message></Error>")


class FaultProxy:
    """Listen on a free loopback port (:attr:`url` once :meth:`serve` started) and
    relay to ``upstream`` as the current mode says."""

    def __init__(self, upstream: tuple[str, int], mode: Mode = "pass",
                 delay: float = 2.0) -> None:
        self.upstream = upstream
        self.mode: Mode = mode
        self.delay = delay
        self.port = 0
        self.requests: Counter[str] = Counter()
        """Requests seen, by method (``PUT``, ``GET``, …), whatever the mode did."""
        self.connections = 0
        """Connections accepted, whatever the mode did with them."""
        self.put_stalled = trio.Event()
        self._open: set[trio.CancelScope] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        for scope in list(self._open):
            scope.cancel()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        with trio.CancelScope() as scope:
            self._open.add(scope)
            try:
                async with client:
                    await self._serve_one(client)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # either side went away: so does the relay
            finally:
                self._open.discard(scope)

    async def _serve_one(self, client: trio.SocketStream) -> None:
        mode = self.mode
        if mode == "reset":
            return
        if mode == "server_error":
            await self._answer_errors(client)
            return
        upstream = await trio.open_tcp_stream(*self.upstream)
        async with upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._relay_requests, client, upstream, mode,
                               nursery.cancel_scope)
            nursery.start_soon(self._relay, upstream, client, nursery.cancel_scope)

    async def _answer_errors(self, client: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await client.receive_some(65536)
            if not chunk:
                return
            head += chunk
        self._count(head)
        await client.send_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(_ERROR_BODY)).encode()
            + b"\r\n\r\n" + _ERROR_BODY)

    def _count(self, chunk: bytes) -> bool:
        for method in _METHODS:
            if chunk.startswith(method):
                self.requests[method.decode().strip()] += 1
                return True
        return False

    async def _relay_requests(self, source: trio.SocketStream, sink: trio.SocketStream,
                              mode: Mode, done: trio.CancelScope) -> None:
        while True:
            chunk = await source.receive_some(65536)
            if not chunk:
                break
            starts_request = self._count(chunk)
            if starts_request and mode == "slow":
                await trio.sleep(self.delay)
            await sink.send_all(chunk)
            if starts_request and mode == "stall_put" and chunk.startswith(b"PUT "):
                self.put_stalled.set()
                await trio.sleep_forever()  # until the client (or set_mode) ends it
        done.cancel()

    async def _relay(self, source: trio.SocketStream, sink: trio.SocketStream,
                     done: trio.CancelScope) -> None:
        while True:
            chunk = await source.receive_some(65536)
            if not chunk:
                break
            await sink.send_all(chunk)
        done.cancel()
