"""The registry of every timeline of a node: load at start, create, get, delete.

Each timeline runs its services (recovery, …) in its own nursery inside the registry's
nursery; deleting the timeline cancels them. A timeline that fails to load is kept as
*broken* (reported by the API) and the others run.

A timeline that *stops* at run time because a resource ran out (a full disk, a quota, no
free file descriptor: ``Timeline.revivable``) heals by itself: the registry waits
``HEAL_MIN_DELAY`` (doubling up to ``HEAL_MAX_DELAY``), checks that a segment's worth of
space can be allocated (``StorageBackend.check_room``), reopens the timeline's storage from
disk and swaps it in (``Timeline.revive``): what a restart of the node would do, for that
timeline only. Other breaks (I/O errors, a read-only file system, corruption, R4) wait
for an operator and a restart.
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
    PullInProgress,
    SafekeeperError,
    ServerInfo,
    SnapshotInvalid,
    StorageError,
    TenantTimelineId,
    decode_state,
    encode_state,
)
from ..storage import AsyncWalStore, ControlFileStore, WalStore
from ._backend import StorageBackend
from ._changes import ChangeFeed
from ._disk_guard import DiskGuard
from ._peers import PeerHub
from ._staging import StagedTimeline
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
HEAL_MIN_DELAY = 1.0
"""Seconds before the first attempt to bring back a timeline stopped by a full disk."""
HEAL_MAX_DELAY = 30.0
"""The longest wait between two such attempts (the delay doubles up to this)."""


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
        guard: DiskGuard | None = None,
    ) -> None:
        self.observer = observer
        self.guard = guard
        """The node's disk guard, handed to every timeline (``None``: no guard)."""
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
        self._healing: set[TenantTimelineId] = set()
        self._create_lock = trio.Lock()
        self.changed = trio.Event()
        self._staging: set[TenantTimelineId] = set()
        """Timelines a pull is building aside now (one pull per timeline at a time)."""
        self.deleted_here: set[TenantTimelineId] = set()
        """Timelines deleted on this node since it started (and not created again): the
        automatic puller leaves them alone while peers still list them."""

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load every timeline, start their services, then run until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            # A pull interrupted by a crash left a staged timeline: it never existed.
            for leftover in await self._blocking(self.backend.discard_stages):
                log.warning("removed %s: a timeline pull that did not finish", leftover)
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
        timeline = Timeline.from_stores(
            self.node_id, state, async_store, control, inline=inline, observer=self.observer,
            hub=self.hub, feed=self.feed, guard=self.guard,
        )
        timeline.on_break = self._on_break
        return timeline

    def _on_break(self, timeline: Timeline) -> None:
        if timeline.revivable and timeline.ttid not in self._healing and self._nursery:
            self._healing.add(timeline.ttid)
            self._nursery.start_soon(self._heal, timeline)

    async def _heal(self, timeline: Timeline) -> None:
        """Bring back a timeline stopped by a passing shortage (see the module docstring);
        gives up only when the timeline is deleted or broken for another reason."""
        ttid = timeline.ttid
        delay = HEAL_MIN_DELAY
        seg_size = timeline.snapshot().wal_seg_size
        log.warning("timeline %s will take writes again by itself once the resource is "
                    "back (first check in %g s)", ttid, delay)
        try:
            while timeline.revivable and self.timelines.get(ttid) is timeline:
                await trio.sleep(delay)
                delay = min(delay * 2, HEAL_MAX_DELAY)
                try:
                    await self._blocking(lambda: self.backend.check_room(ttid, seg_size))
                    store, control, body = await self._blocking(lambda: self.backend.open(ttid))
                except (OSError, SafekeeperError) as e:
                    log.info("timeline %s is still short of resources (next check in %g s): "
                             "%s", ttid, delay, e)
                    continue
                try:
                    state = decode_state(body)
                except CorruptionError as e:  # not a shortage: leave it to an operator
                    log.error("timeline %s cannot be reloaded: %s", ttid, e)
                    await self._blocking(store.close)
                    return
                await timeline.revive(state, self._async_store(store), control)
        finally:
            self._healing.discard(ttid)

    def _async_store(self, store: WalStore) -> AsyncWalStore:
        return AsyncWalStore(store, inline=not self.backend.in_thread)

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
            self.deleted_here.discard(ttid)
            log.info("created timeline %s at %s", ttid, params.start_lsn)
            return timeline, True

    async def stage(self, ttid: TenantTimelineId, seg_size: int, start_lsn: Lsn) -> StagedTimeline:
        """Begin building ``ttid`` aside from a pulled snapshot (``_staging.py``, rules
        I1-I4). ``TimelineConflict`` if the timeline exists here already."""
        if not MIN_SEG_SIZE <= seg_size <= MAX_SEG_SIZE or seg_size & (seg_size - 1):
            raise SnapshotInvalid(f"snapshot's segment size {seg_size} is not valid")
        async with self._create_lock:
            if ttid in self.timelines or ttid in self.broken:
                raise TimelineConflict(f"timeline {ttid} exists on this node")
            if ttid in self._staging:
                raise PullInProgress(f"timeline {ttid} is being staged by another pull")
            self._staging.add(ttid)
        try:
            store = await self._blocking(lambda: self.backend.stage(ttid, seg_size, start_lsn))
        except BaseException as e:
            self._staging.discard(ttid)
            if isinstance(e, OSError):
                raise StorageError(f"staging pulled timeline {ttid} failed: {e}") from e
            raise
        return StagedTimeline(self, ttid, store, start_lsn)

    async def _install(self, ttid: TenantTimelineId, store: WalStore, body: bytes) -> Timeline:
        try:
            return await self._install_staged(ttid, store, body)
        finally:
            self._staging.discard(ttid)

    async def _install_staged(self, ttid: TenantTimelineId, store: WalStore, body: bytes
                              ) -> Timeline:
        async with self._create_lock:
            if ttid in self.timelines or ttid in self.broken:
                await self._discard_stage(ttid, store)
                raise TimelineConflict(f"timeline {ttid} appeared on this node during the pull")
            try:
                await self._blocking(lambda: self.backend.commit_stage(ttid, store, body))
            except FileExistsError as e:
                raise TimelineConflict(f"timeline {ttid}: {e}") from None
            except OSError as e:
                await self._blocking(lambda: self.backend.discard_stage(ttid))
                raise StorageError(f"installing pulled timeline {ttid} failed: {e}") from e
            timeline = await self._load(ttid)
            self._start(timeline)
        log.info("installed pulled timeline %s (WAL up to %s)", ttid, timeline.flush_lsn)
        return timeline

    async def _discard_stage(self, ttid: TenantTimelineId, store: WalStore) -> None:
        def discard() -> None:
            try:
                store.close()
            finally:
                self.backend.discard_stage(ttid)

        try:
            with trio.CancelScope(shield=True):  # never leave a staging half-removed
                await self._blocking(discard)
        finally:
            self._staging.discard(ttid)

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
            self.deleted_here.add(ttid)
            self.feed.record_deleted(ttid)
            log.info("deleted timeline %s", ttid)
            return True

    async def persist_all(self) -> None:
        """Persist every timeline's in-memory horizons (periodically and at shutdown)."""
        for timeline in list(self.timelines.values()):
            await timeline.persist_in_memory()
