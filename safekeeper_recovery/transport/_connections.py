"""The node-wide cap on open client connections, shared by the WAL port and the HTTP port.

Every accepted connection costs a file descriptor, and so does every segment, control file
and flush-position file of every timeline. A client that opens connections without end
must not take the descriptors a timeline needs to persist a vote (issue 20: 27 idle
``wal_stream`` connections under a low limit broke a timeline with EMFILE). So a node
holds at most ``limit`` client connections; one more is answered at once with ``503``
``{"error": "too many connections: …"}`` and closed, before anything is read from it (both
ports speak HTTP first, so every client understands the answer), and the node and its
timelines go on. Refusals are logged at most once a minute.

:func:`connection_cap` derives the default limit from ``RLIMIT_NOFILE``: at most half of
the descriptors go to connections.
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Final, final

import attrs
import trio

__all__ = ["ConnectionSlots", "ConnectionSlotsStatistics", "connection_cap"]

log = logging.getLogger(__name__)

REFUSAL_LOG_INTERVAL: Final = 60.0
REFUSAL_SEND_TIMEOUT: Final = 1.0
"""How long a refused client gets to take its 503 (it is closed either way)."""


def connection_cap(wanted: int) -> int:
    """``wanted``, lowered to half the soft ``RLIMIT_NOFILE`` (the other half is for
    timelines' files; at least 16)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft // 2))


@final
@attrs.define
class ConnectionSlotsStatistics:
    limit: int
    open: int
    refused: int


@final
class ConnectionSlots:
    """At most ``limit`` connections open at once; see the module docstring."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"connection limit must be positive, got {limit}")
        self.limit = limit
        self._open = 0
        self._refused = 0
        self._last_log = -float("inf")

    def statistics(self) -> ConnectionSlotsStatistics:
        return ConnectionSlotsStatistics(self.limit, self._open, self._refused)

    @contextmanager
    def hold(self) -> Iterator[bool]:
        """Take a slot for the block; yields ``False`` (and takes none) when all are taken."""
        if self._open >= self.limit:
            self._refused += 1
            now = trio.current_time()
            if now - self._last_log >= REFUSAL_LOG_INTERVAL:
                self._last_log = now
                log.warning("refusing connections: %d open, the limit (%d refused so far)",
                            self._open, self._refused)
            yield False
            return
        self._open += 1
        try:
            yield True
        finally:
            self._open -= 1

    async def serve(
        self,
        stream: trio.SocketStream,
        serve_one: Callable[[trio.SocketStream], Awaitable[object]],
    ) -> None:
        """``serve_one(stream)`` in a slot; without a free slot answer 503 and close."""
        with self.hold() as admitted:
            if admitted:
                await serve_one(stream)
                return
            try:
                await self._refuse(stream)
            finally:
                await trio.aclose_forcefully(stream)

    async def _refuse(self, stream: trio.SocketStream) -> None:
        body = json.dumps({
            "error": f"too many connections: this node holds {self.limit}, its limit; "
                     "try again later"
        }).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        ).encode()
        with (
            trio.move_on_after(REFUSAL_SEND_TIMEOUT),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await stream.send_all(head + body)  # a client that left already gets nothing
