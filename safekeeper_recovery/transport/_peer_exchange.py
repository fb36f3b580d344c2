"""Peer exchange: every node tells its peers about its timelines — on change, cheaply.

Sending (:func:`serve_peer_exchange`): a timeline's info goes out when it changes (the
registry's :class:`~safekeeper_recovery.timeline.PeerHub` feeds every ``Timeline.changed``
firing), coalesced to at most one batch per ``min_interval``; with nothing changed, an
empty *heartbeat* batch goes out every ``interval``; a *full* batch (every timeline) goes
out first, every ``full_interval`` (jittered), whenever a peer asks for one and whenever a
peer turns out to have restarted (a batch of a new session from it: it knows nothing of
ours, and would otherwise ask only when our next heartbeat reached it). So 10,000
idle timelines cost one tiny request per peer per second, not 10,000 entries.

Receiving (:func:`apply_peer_info_batch`, behind ``POST /v1/peer_info``): each entry is
stamped with the receiver's clock (reference §9). A batch carrying the sender's
``session`` and the next ``seq`` (nothing missed) *confirms* that everything the sender
told us is still current, which keeps all its entries alive (``PeerHub.confirm``); a gap
(a lost push, either side restarted) answers ``resync`` and the sender's next batch is
full. A full batch also drops the sender's entries of timelines it no longer lists.
Liveness semantics are unchanged: an entry counts while it was received *or confirmed*
less than the heartbeat timeout ago.

The seam is :class:`PeerExchange` (``publish`` + ``on_resync``), so a broker such as etcd
can replace the HTTP fan-out for large deployments.

Usage::

    exchange = HttpPeerExchange({NodeId(2): "http://10.0.0.2:7676", …}, token=jwt)
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.serve)          # one sender per peer
        await nursery.start(serve_peer_exchange, registry, exchange, my_id, http, wal)
"""

from __future__ import annotations

import collections
import logging
import math
import random
import secrets
from collections.abc import Callable, Mapping
from typing import Final, Protocol

import attrs
import trio

from ..core import NodeId, TenantTimelineId
from ..timeline import TimelineBroken, TimelineRegistry
from ._http_client import HttpError, SafekeeperClient
from ._json import PeerInfoBatch, PeerTimelineInfo, peer_timeline_info

__all__ = [
    "FULL_RESYNC_INTERVAL",
    "BUSY_AFTER",
    "BUSY_PUSH_INTERVAL",
    "MIN_PUSH_INTERVAL",
    "HttpPeerExchange",
    "PeerExchange",
    "PeerSenderStatistics",
    "apply_peer_info_batch",
    "build_peer_info_batch",
    "serve_peer_exchange",
]

log = logging.getLogger(__name__)

FAILURE_LOG_INTERVAL: Final = 60.0
"""A failing peer is logged at most once per this many seconds."""
MIN_PUSH_INTERVAL: Final = 0.1
"""A change after a quiet spell goes out within this many seconds (coalesced)."""
BUSY_PUSH_INTERVAL: Final = 0.5
"""While changes keep coming (``BUSY_AFTER`` change-carrying batches went out in the last
``interval`` with no new term among them), they are coalesced into at most one batch per
this many seconds. A node taking WAL changes its flush position on every fsync: at 0.1 s
that was 20 HTTP requests a second per node (10 out, 10 in from each of two peers), about
a seventh of an ingesting node's CPU. News that wakes a lagging node's recovery still goes
out after ``MIN_PUSH_INTERVAL``: the first changes after quiet, and a new term or
last_log_term of any timeline, which also starts the count again (so the flush that makes
a new leader's WAL available to a lagging node is not held back either)."""
BUSY_AFTER: Final = 3
FULL_RESYNC_INTERVAL: Final = 450.0
"""Mean period of the unconditional full batch (jittered ±1/3, so 5 to 10 minutes). A
safety net only: session + seq already make a receiver ask for a full batch whenever it
missed one. A full batch of 10,000 timelines costs about a second of CPU on each side."""


class PeerExchange(Protocol):
    """Delivers a node's batches to every peer."""

    async def publish(self, batch: PeerInfoBatch) -> None:
        """Hand ``batch`` over for delivery to all peers, after the ones published before
        (deltas build on each other). Never raises for a peer's failure (the exchange
        logs it); should not block for long on a slow or dead peer."""
        ...

    def on_resync(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a peer asks for a full batch (it missed something)."""
        ...


@attrs.define
class PeerSenderStatistics:
    """What happened to the pushes to one peer."""

    url: str
    sent: int = 0
    failed: int = 0
    resyncs: int = 0
    """Times this peer answered that it missed a batch and wants a full one."""
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


@attrs.define
class _Pending:
    """What one peer has not been sent yet: maybe a full batch, then changes on top."""

    full: PeerInfoBatch | None = None
    entries: dict[TenantTimelineId, PeerTimelineInfo] = attrs.Factory(dict)
    removed: set[TenantTimelineId] = attrs.Factory(set)

    def merge(self, batch: PeerInfoBatch) -> None:
        if batch.full:
            self.full = batch
            self.entries.clear()
            self.removed.clear()
            return
        for entry in batch.timelines:
            self.entries[entry.ttid] = entry
            self.removed.discard(entry.ttid)
        for ttid in batch.removed:
            self.entries.pop(ttid, None)
            self.removed.add(ttid)

    def batch(self, base: PeerInfoBatch) -> PeerInfoBatch:
        """One batch with everything pending (``base`` gives the sender's addresses)."""
        if self.full is None:
            return attrs.evolve(base, timelines=tuple(self.entries.values()), full=False,
                                removed=tuple(self.removed))
        if not self.entries and not self.removed:
            return self.full
        timelines = {t.ttid: t for t in self.full.timelines}
        timelines.update(self.entries)
        for ttid in self.removed:
            timelines.pop(ttid, None)
        return attrs.evolve(self.full, timelines=tuple(timelines.values()))


class HttpPeerExchange:
    """Pushes batches to peers over ``POST /v1/peer_info`` of their HTTP APIs.

    ``peers`` maps node ids to base URLs (``http://host:port``). While :meth:`serve` runs,
    each peer has its own sender task; ``publish`` merges the batch into what that peer
    has pending (a full batch replaces it, a delta is applied on top) and returns at once,
    so a slow or unreachable peer — bounded by ``timeout`` per push — never delays the
    others, and a peer that is busy gets the accumulated changes in one batch. Every push
    carries this exchange's random session id and the peer's next sequence number; a
    failed push is not retried (the receiver notices the gap and asks for a full batch,
    which calls the :meth:`on_resync` callback). Without ``serve``, ``publish`` pushes to
    all peers concurrently and waits for them. Failures are logged per peer at most once
    a minute.

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
        self.session = secrets.token_hex(8)
        self._clients = {node: factory(url) for node, url in self.peers.items()}
        self._stats = {node: PeerSenderStatistics(url) for node, url in self.peers.items()}
        self._seq = dict.fromkeys(self.peers, 0)
        self._pending: dict[NodeId, _Pending] = {}
        self._base: PeerInfoBatch | None = None
        self._wakeup = {node: trio.Event() for node in self.peers}
        self._serving = False
        self._failures = _FailureLog()
        self._resync_callbacks: list[Callable[[], None]] = []

    def statistics(self) -> dict[NodeId, PeerSenderStatistics]:
        return {node: attrs.evolve(s) for node, s in self._stats.items()}

    def on_resync(self, callback: Callable[[], None]) -> None:
        self._resync_callbacks.append(callback)

    async def publish(self, batch: PeerInfoBatch) -> None:
        self._base = batch
        if self._serving:
            for node in self.peers:
                self._pending.setdefault(node, _Pending()).merge(batch)
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
            pending = self._pending.pop(node, None)
            if pending is not None and self._base is not None:
                await self._push(node, pending.batch(self._base))

    async def _push(self, node: NodeId, batch: PeerInfoBatch) -> None:
        stats = self._stats[node]
        self._seq[node] += 1
        batch = attrs.evolve(batch, session=self.session, seq=self._seq[node])
        try:
            answer = await self._clients[node].post_peer_info(batch)
        except HttpError as e:
            stats.failed += 1
            stats.last_error = str(e)
            self._failures.failure(node, f"peer info push to sk {node} ({stats.url}) failed: {e}")
            return
        stats.sent += 1
        stats.last_success_at = trio.current_time()
        self._failures.success(node, f"peer info push to sk {node} ({stats.url}) works again")
        if answer.get("resync") is True:
            stats.resyncs += 1
            for callback in self._resync_callbacks:
                callback()


def build_peer_info_batch(
    registry: TimelineRegistry, node_id: NodeId, http_addr: str, wal_addr: str
) -> PeerInfoBatch:
    """One full batch with the current info of every loaded timeline of ``registry``."""
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


def _delta_batch(
    registry: TimelineRegistry, base: PeerInfoBatch, changed: set[TenantTimelineId]
) -> PeerInfoBatch:
    entries: list[PeerTimelineInfo] = []
    removed: list[TenantTimelineId] = []
    for ttid in changed:
        timeline = registry.timelines.get(ttid)
        if timeline is None or timeline.deleted:
            removed.append(ttid)
        else:
            entries.append(peer_timeline_info(timeline.snapshot()))
    return attrs.evolve(base, timelines=tuple(entries), full=False, removed=tuple(removed))


def _term_news(batch: PeerInfoBatch, terms: dict[TenantTimelineId, tuple[int, int]]) -> bool:
    """Whether ``batch`` tells of a new term or last_log_term (or a removed timeline) against
    ``terms``, which it updates."""
    news = False
    for entry in batch.timelines:
        key = (int(entry.term), int(entry.last_log_term))
        if terms.get(entry.ttid) != key:
            terms[entry.ttid] = key
            news = True
    for ttid in batch.removed:
        news = terms.pop(ttid, None) is not None or news
    return news


async def serve_peer_exchange(
    registry: TimelineRegistry,
    exchange: PeerExchange,
    node_id: NodeId,
    http_addr: str,
    wal_addr: str,
    *,
    interval: float = 1.0,
    min_interval: float = MIN_PUSH_INTERVAL,
    busy_interval: float = BUSY_PUSH_INTERVAL,
    full_interval: float = FULL_RESYNC_INTERVAL,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Publish our timelines' info to ``exchange`` (see the module docstring); never
    returns.

    The first (full) batch goes out before ``task_status.started()``. Then: changed
    timelines within ``min_interval`` of a change after quiet, within ``busy_interval``
    while changes keep coming (``BUSY_AFTER`` change batches in the last ``interval``;
    coalesced), an empty heartbeat after ``interval`` without changes, a full batch every
    ``full_interval`` times 2/3 to 4/3 and soon after a peer asks for one or restarted. An
    exception from ``exchange.publish`` is logged (at most once a minute) and the loop goes
    on; what it carried is published again in full.
    """
    rng = rng or random.Random()
    failures = _FailureLog()
    base = PeerInfoBatch(node_id, http_addr, wal_addr)
    changed: set[TenantTimelineId] = set()
    full_wanted = True
    wake = trio.Event()
    urgent = trio.Event()  # set while holding changes back if one of them is term news
    holding_back = False
    recent: collections.deque[float] = collections.deque(maxlen=BUSY_AFTER)
    """When the last batches carrying changes went out (since the last term news)."""
    terms: dict[TenantTimelineId, tuple[int, int]] = {}
    """(term, last_log_term) of each timeline as last published."""

    def is_news(ttid: TenantTimelineId) -> bool:
        timeline = registry.timelines.get(ttid)
        if timeline is None or timeline.deleted:
            return ttid in terms
        snap = timeline.snapshot()
        return terms.get(ttid) != (int(snap.term), int(snap.last_log_term))

    def on_change(ttid: TenantTimelineId) -> None:
        changed.add(ttid)
        wake.set()
        if holding_back and is_news(ttid):
            urgent.set()

    def on_resync() -> None:
        nonlocal full_wanted
        full_wanted = True
        wake.set()

    def next_full() -> float:
        return trio.current_time() + full_interval * rng.uniform(2 / 3, 4 / 3)

    unsubscribe = registry.hub.subscribe(on_change)
    unsubscribe_restarts = registry.hub.subscribe_restarts(lambda _node: on_resync())
    exchange.on_resync(on_resync)
    started = False
    full_at = next_full()
    last_publish = -math.inf
    try:
        while True:
            now = trio.current_time()
            if full_wanted or now >= full_at:
                full_wanted = False
                changed.clear()
                full_at = next_full()
                batch = build_peer_info_batch(registry, node_id, http_addr, wal_addr)
            else:
                batch = _delta_batch(registry, base, changed)
                changed.clear()
            if _term_news(batch, terms):
                recent.clear()
            if batch.timelines:
                recent.append(now)
            wake = trio.Event()
            last_publish = now
            try:
                await exchange.publish(batch)
            except Exception as e:  # keep publishing: the next round may well succeed
                failures.failure("publish", f"peer info publish failed: {type(e).__name__}: {e}")
                full_wanted = True  # what this batch carried may be lost
            else:
                failures.success("publish", "peer info publish works again")
            if not started:
                started = True
                task_status.started()
            # Heartbeat after `interval` of quiet; a change goes out sooner, coalesced.
            with trio.move_on_after(max(0.0, last_publish + interval - trio.current_time())):
                await wake.wait()
                busy = len(recent) == BUSY_AFTER and trio.current_time() - recent[0] < interval
                if busy and not any(is_news(ttid) for ttid in changed):
                    # Hold the stream of changes back, unless term news turns up meanwhile.
                    urgent = trio.Event()
                    holding_back = True
                    try:
                        with trio.move_on_at(last_publish + busy_interval):
                            await urgent.wait()
                    finally:
                        holding_back = False
                await trio.sleep_until(last_publish + min_interval)
    finally:
        unsubscribe()
        unsubscribe_restarts()


async def apply_peer_info_batch(
    registry: TimelineRegistry, batch: PeerInfoBatch, now: float
) -> dict[str, object]:
    """Apply one received batch (see the module docstring) with our clock ``now``.

    Returns the answer ``{"applied": n, "ignored": m, "resync": bool}`` (without
    ``resync`` for a batch without a session): entries for
    timelines we do not have (reference §9: not an error) or that are stopped are
    ignored — one bad timeline never loses the rest of the batch. Entries the decoder
    left out as invalid add ``"rejected": k, "rejections": [why, …]`` and one warning.
    """
    result = await _apply_entries(registry, batch, now)
    if batch.rejected:
        log.warning("peer info from sk %s: %d invalid entries left out, e.g. %s",
                    batch.node_id, batch.rejected,
                    batch.rejections[0] if batch.rejections else "?")
        result["rejected"] = batch.rejected
        result["rejections"] = list(batch.rejections)
    return result


async def _apply_entries(
    registry: TimelineRegistry, batch: PeerInfoBatch, now: float
) -> dict[str, object]:
    hub = registry.hub
    node = batch.node_id
    applied = ignored = 0
    for entry in batch.timelines:
        timeline = registry.timelines.get(entry.ttid)
        if timeline is None:
            ignored += 1
            continue
        info = entry.to_peer_info(node, batch.http_addr, batch.wal_addr, now)
        try:
            await timeline.record_peer_info(info)
        except TimelineBroken as e:
            log.warning("peer info for %s not applied: %s", entry.ttid, e)
            ignored += 1
            continue
        applied += 1
    for ttid in batch.removed:
        timeline = registry.timelines.get(ttid)
        if timeline is not None:
            timeline.forget_peer(node)
    if batch.session is None:
        return {"applied": applied, "ignored": ignored}  # no session, nothing to confirm
    if hub.session_seen(node, batch.session):
        # It restarted and knows nothing of our timelines; our sender (subscribed to the
        # hub) sends a full batch now rather than wait for our next heartbeat to be
        # refused, so a restarted node finds its donors about a heartbeat sooner.
        log.info("peer sk %s restarted (new exchange session): sending it a full batch", node)
    if batch.full:
        listed = {entry.ttid for entry in batch.timelines}
        for timeline in list(registry.timelines.values()):
            if node in timeline.peers and timeline.ttid not in listed:
                timeline.forget_peer(node)
    elif hub.sessions.get(node) != (batch.session, batch.seq - 1):
        # We missed a batch (or either side restarted): what we hold may be stale, so it
        # is not confirmed; the entries above are fresh all the same.
        return {"applied": applied, "ignored": ignored, "resync": True}
    hub.sessions[node] = (batch.session, batch.seq)
    if hub.confirm(node, now) and not batch.full:
        # Back after a silence: its entries may have been counted dead, so where it would
        # be a donor waiters must re-check (a full batch has woken what it listed).
        for timeline in list(registry.timelines.values()):
            if timeline.peer_is_ahead(node):
                timeline.changed.notify()
    return {"applied": applied, "ignored": ignored, "resync": False}
