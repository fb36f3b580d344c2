"""Peer exchange: every node pushes its timelines' info to its peers about once a second.

The seam is :class:`PeerExchange` (one method, ``publish``), so a broker such as etcd can
replace the HTTP fan-out for large deployments. The receiving side is the HTTP app's
``POST /v1/peer_info``, which stamps each entry with the receiver's clock (reference §9).

Usage::

    exchange = HttpPeerExchange({NodeId(2): "http://10.0.0.2:7676", …}, token=jwt)
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.serve)          # one sender per peer
        await nursery.start(serve_peer_exchange, registry, exchange, my_id, http, wal)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Final, Protocol

import attrs
import trio

from ..core import NodeId
from ..timeline import TimelineRegistry
from ._http_client import HttpError, SafekeeperClient
from ._json import PeerInfoBatch, peer_timeline_info

__all__ = [
    "HttpPeerExchange",
    "PeerExchange",
    "PeerSenderStatistics",
    "build_peer_info_batch",
    "serve_peer_exchange",
]

log = logging.getLogger(__name__)

FAILURE_LOG_INTERVAL: Final = 60.0
"""A failing peer is logged at most once per this many seconds."""


class PeerExchange(Protocol):
    """Delivers a node's batch to every peer."""

    async def publish(self, batch: PeerInfoBatch) -> None:
        """Hand ``batch`` over for delivery to all peers. Never raises for a peer's failure
        (the exchange logs it); should not block for long on a slow or dead peer."""
        ...


@attrs.define
class PeerSenderStatistics:
    """What happened to the pushes to one peer."""

    url: str
    sent: int = 0
    failed: int = 0
    last_error: str | None = None
    last_success_at: float | None = None


class _FailureLog:
    """Logs a peer's failure at most once per ``interval`` and its recovery once."""

    def __init__(self, interval: float = FAILURE_LOG_INTERVAL) -> None:
        self.interval = interval
        self._last_logged: dict[object, float] = {}
        self._failing: set[object] = set()

    def failure(self, key: object, message: str) -> None:
        now = trio.current_time()
        self._failing.add(key)
        last = self._last_logged.get(key)
        if last is None or now - last >= self.interval:
            self._last_logged[key] = now
            log.warning("%s (logged at most once per %gs)", message, self.interval)

    def success(self, key: object, message: str) -> None:
        if key in self._failing:
            self._failing.discard(key)
            self._last_logged.pop(key, None)
            log.info("%s", message)


class HttpPeerExchange:
    """Pushes batches to peers over ``POST /v1/peer_info`` of their HTTP APIs.

    ``peers`` maps node ids to base URLs (``http://host:port``). While :meth:`serve` runs,
    each peer has its own sender task holding the latest batch only (older ones are
    dropped), so a slow or unreachable peer — bounded by ``timeout`` per push — never
    delays the others and ``publish`` returns at once. Without ``serve``, ``publish``
    pushes to all peers concurrently and waits for them. Failures are logged per peer at
    most once a minute; nothing is retried (the next batch supersedes it).

    ``client_factory(url)`` builds each peer's client (tests pass one with an in-process
    transport); the clients are closed when ``serve`` ends or by :meth:`aclose`.
    """

    def __init__(
        self,
        peers: Mapping[NodeId, str],
        token: str | None = None,
        timeout: float = 10.0,
        *,
        client_factory: Callable[[str], SafekeeperClient] | None = None,
    ) -> None:
        def default_factory(url: str) -> SafekeeperClient:
            return SafekeeperClient(url, token=token, timeout=timeout)

        factory = client_factory or default_factory
        self.peers = dict(peers)
        self._clients = {node: factory(url) for node, url in self.peers.items()}
        self._stats = {node: PeerSenderStatistics(url) for node, url in self.peers.items()}
        self._pending: dict[NodeId, PeerInfoBatch] = {}
        self._wakeup = {node: trio.Event() for node in self.peers}
        self._serving = False
        self._failures = _FailureLog()

    def statistics(self) -> dict[NodeId, PeerSenderStatistics]:
        return {node: attrs.evolve(s) for node, s in self._stats.items()}

    async def publish(self, batch: PeerInfoBatch) -> None:
        if self._serving:
            for node in self.peers:
                self._pending[node] = batch
                self._wakeup[node].set()
            return
        async with trio.open_nursery() as nursery:
            for node in self.peers:
                nursery.start_soon(self._push, node, batch)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Run one sender per peer until cancelled, then close the clients."""
        try:
            async with trio.open_nursery() as nursery:
                for node in self.peers:
                    nursery.start_soon(self._sender, node)
                self._serving = True
                task_status.started()
        finally:
            self._serving = False
            with trio.move_on_after(5.0) as scope:
                scope.shield = True  # close the connections even when cancelled
                await self.aclose()

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()

    async def _sender(self, node: NodeId) -> None:
        while True:
            await self._wakeup[node].wait()
            self._wakeup[node] = trio.Event()
            batch = self._pending.pop(node, None)
            if batch is not None:
                await self._push(node, batch)

    async def _push(self, node: NodeId, batch: PeerInfoBatch) -> None:
        stats = self._stats[node]
        try:
            await self._clients[node].post_peer_info(batch)
        except HttpError as e:
            stats.failed += 1
            stats.last_error = str(e)
            self._failures.failure(node, f"peer info push to sk {node} ({stats.url}) failed: {e}")
            return
        stats.sent += 1
        stats.last_success_at = trio.current_time()
        self._failures.success(node, f"peer info push to sk {node} ({stats.url}) works again")


def build_peer_info_batch(
    registry: TimelineRegistry, node_id: NodeId, http_addr: str, wal_addr: str
) -> PeerInfoBatch:
    """One batch with the current info of every loaded timeline of ``registry``."""
    return PeerInfoBatch(
        node_id=node_id,
        http_addr=http_addr,
        wal_addr=wal_addr,
        timelines=tuple(
            peer_timeline_info(t.snapshot())
            for t in list(registry.timelines.values())
            if not t.deleted
        ),
    )


async def serve_peer_exchange(
    registry: TimelineRegistry,
    exchange: PeerExchange,
    node_id: NodeId,
    http_addr: str,
    wal_addr: str,
    *,
    interval: float = 1.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Publish one batch with all timelines' info every ``interval`` seconds; never returns.

    The first batch goes out before ``task_status.started()``. Rounds keep a fixed rate
    (a slow round is followed at once by the next, not by a pile-up). An exception from
    ``exchange.publish`` is logged (at most once a minute) and the loop goes on.
    """
    failures = _FailureLog()
    deadline = trio.current_time()
    started = False
    while True:
        batch = build_peer_info_batch(registry, node_id, http_addr, wal_addr)
        try:
            await exchange.publish(batch)
        except Exception as e:  # keep publishing: the next round may well succeed
            failures.failure("publish", f"peer info publish failed: {type(e).__name__}: {e}")
        else:
            failures.success("publish", "peer info publish works again")
        if not started:
            started = True
            task_status.started()
        deadline = max(deadline + interval, trio.current_time())
        await trio.sleep_until(deadline)
