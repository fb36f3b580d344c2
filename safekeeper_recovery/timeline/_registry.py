"""The registry of every timeline of a node: load at start, create, get, delete.

Each timeline runs its services (recovery, …) in its own nursery inside the registry's
nursery; deleting the timeline cancels them. A timeline that fails to load is kept as
*broken* (reported by the API) and the others run.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import attrs
import trio

from ..core import (
    CorruptionError,
    Lsn,
    NodeId,
    PersistentState,
    SafekeeperError,
    ServerInfo,
    StorageError,
    TenantTimelineId,
    decode_state,
    encode_state,
)
from ..storage import AsyncWalStore, ControlFileStore, WalStore
from ._backend import StorageBackend
from ._changes import ChangeFeed
from ._peers import PeerHub
from ._timeline import Timeline, TimelineObserver

__all__ = [
    "TimelineConflict",
    "TimelineNotFound",
    "TimelineParams",
    "TimelineRegistry",
    "TimelineService",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

TimelineService = Callable[[Timeline], Awaitable[None]]
"""A per-timeline task, run in the timeline's nursery until the timeline is deleted."""

MIN_SEG_SIZE = 1 << 20
MAX_SEG_SIZE = 1 << 30


class TimelineNotFound(SafekeeperError):
    """No such timeline on this node (HTTP 404)."""


class TimelineConflict(SafekeeperError):
    """The timeline exists with different parameters (HTTP 409)."""


@attrs.frozen
class TimelineParams:
    """What a timeline is created with; repeating a create with equal params is a no-op."""

    start_lsn: Lsn
    wal_seg_size: int = 16 * 1024 * 1024
    pg_version: int = 0
    system_id: int = 0

    def __attrs_post_init__(self) -> None:
        seg = self.wal_seg_size
        if not MIN_SEG_SIZE <= seg <= MAX_SEG_SIZE or seg & (seg - 1):
            raise ValueError(
                f"wal_seg_size must be a power of two between 1 MiB and 1 GiB, got {seg}"
            )
        if self.start_lsn == 0:
            raise ValueError("start_lsn must not be 0/0 (INVALID)")


class TimelineRegistry:
    """All timelines of one node. Start with ``await nursery.start(registry.serve)``."""

    def __init__(
        self,
        node_id: NodeId,
        backend: StorageBackend,
        *,
        services: Sequence[TimelineService] = (),
        observer: TimelineObserver | None = None,
        hub: PeerHub | None = None,
        feed: ChangeFeed | None = None,
    ) -> None:
        self.observer = observer
        self.hub = hub if hub is not None else PeerHub()
        """Shared by every timeline: peer liveness and the change feed of the exchange."""
        self.feed = feed if feed is not None else ChangeFeed()
        """Every change of every timeline, numbered: what a sidecar long-polls."""
        self.node_id = node_id
        self.backend = backend
        self.services = list(services)
        self.timelines: dict[TenantTimelineId, Timeline] = {}
        self.broken: dict[TenantTimelineId, str] = {}
        """Timelines that failed to load, with the reason."""
        self._nursery: trio.Nursery | None = None
        self._create_lock = trio.Lock()
        self.changed = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load every timeline, start their services, then run until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            ttids = await self._blocking(self.backend.list)
            for ttid in ttids:
                try:
                    timeline = await self._load(ttid)
                except (SafekeeperError, OSError) as e:
                    log.error("timeline %s failed to load: %s", ttid, e)
                    self.broken[ttid] = f"failed to load: {e}"
                    continue
                self._start(timeline)
            log.info("loaded %d timelines (%d broken)", len(self.timelines), len(self.broken))
            task_status.started()
            await trio.sleep_forever()

    async def _load(self, ttid: TenantTimelineId) -> Timeline:
        store, control, body = await self._blocking(lambda: self.backend.open(ttid))
        state = decode_state(body)
        if (state.tenant_id, state.timeline_id) != (ttid.tenant_id, ttid.timeline_id):
            raise CorruptionError(
                f"control file of {ttid} names {state.tenant_id}/{state.timeline_id}"
            )
        return self._timeline(state, store, control)

    async def _blocking(self, fn: Callable[[], T]) -> T:
        if not self.backend.in_thread:
            await trio.lowlevel.checkpoint()
            return fn()
        return await trio.to_thread.run_sync(fn)

    def _timeline(
        self, state: PersistentState, store: WalStore, control: ControlFileStore
    ) -> Timeline:
        inline = not self.backend.in_thread
        async_store = AsyncWalStore(store, inline=inline)
        return Timeline.from_stores(
            self.node_id, state, async_store, control, inline=inline, observer=self.observer,
            hub=self.hub, feed=self.feed,
        )

    def _start(self, timeline: Timeline) -> None:
        assert self._nursery is not None, "registry is not serving"
        self.timelines[timeline.ttid] = timeline
        self.feed.record(timeline.ttid)
        self._nursery.start_soon(self._run_timeline, timeline)

    async def _run_timeline(self, timeline: Timeline) -> None:
        async with timeline.attach(), trio.open_nursery() as nursery:
            for service in self.services:
                nursery.start_soon(service, timeline)
            await trio.sleep_forever()

    def get(self, ttid: TenantTimelineId) -> Timeline:
        try:
            return self.timelines[ttid]
        except KeyError:
            raise TimelineNotFound(f"timeline {ttid} not found on this node") from None

    async def create(self, ttid: TenantTimelineId, params: TimelineParams) -> tuple[Timeline, bool]:
        """Create a timeline; return it and whether it was new.

        Repeating a create with identical params returns the existing timeline (``False``);
        different params raise :class:`TimelineConflict`.
        """
        async with self._create_lock:
            existing = self.timelines.get(ttid)
            if existing is not None:
                st = existing.acceptor.persisted
                have = TimelineParams(
                    st.timeline_start_lsn, st.server.wal_seg_size, st.server.pg_version,
                    st.server.system_id,
                )
                if have != params:
                    raise TimelineConflict(
                        f"timeline {ttid} exists with different parameters: {have}"
                    )
                return existing, False
            if ttid in self.broken:
                raise TimelineConflict(f"timeline {ttid} exists but is broken: {self.broken[ttid]}")
            state = PersistentState.new_timeline(
                ttid.tenant_id,
                ttid.timeline_id,
                params.start_lsn,
                ServerInfo(params.pg_version, params.system_id, params.wal_seg_size),
            )
            try:
                body = encode_state(state)
                store, control = await self._blocking(
                    lambda: self.backend.create(ttid, params.wal_seg_size, params.start_lsn, body)
                )
            except OSError as e:
                raise StorageError(f"creating timeline {ttid} failed: {e}") from e
            timeline = self._timeline(state, store, control)
            self._start(timeline)
            log.info("created timeline %s at %s", ttid, params.start_lsn)
            return timeline, True

    async def delete(self, ttid: TenantTimelineId) -> bool:
        """Delete a timeline and its data; return whether it existed."""
        async with self._create_lock:
            timeline = self.timelines.pop(ttid, None)
            was_broken = self.broken.pop(ttid, None) is not None
            if timeline is None and not was_broken:
                return False
            if timeline is not None:
                timeline.mark_deleted()
                async with timeline.lock:
                    await timeline.store.aclose()
            await self._blocking(lambda: self.backend.delete(ttid))
            self.feed.record_deleted(ttid)
            log.info("deleted timeline %s", ttid)
            return True

    async def persist_all(self) -> None:
        """Persist every timeline's in-memory horizons (periodically and at shutdown)."""
        for timeline in list(self.timelines.values()):
            await timeline.persist_in_memory()
