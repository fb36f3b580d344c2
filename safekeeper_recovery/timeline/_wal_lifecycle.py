"""The WAL lifecycle of one timeline: archive completed segments, remove old WAL.

:func:`serve_wal_lifecycle` runs per timeline (a :class:`TimelineService` made by
:func:`wal_lifecycle_service`) and repeats one step whenever the timeline changes:

1. With an archive, decide the uploader (core rule L1, from this node's snapshot and its
   alive peers). If it is this node, upload the oldest complete segments that are wholly
   committed and not archived yet (L2), up to ``UPLOADS_AT_ONCE``: read each from the
   timeline in turn and ``put`` them at once (the archive verifies size and SHA-256 on the
   way back, rules A1-A3), then make the new ``backup_lsn`` durable once, at the end of
   the prefix whose uploads all succeeded (:meth:`Timeline.advance_backup_lsn`); peers
   learn it from the peer exchange and adopt the maximum. A few segments per step, so a
   long backlog never holds the timeline's lock or the event loop for long.
2. Remove the segments below the removal horizon (L3: ``min(commit_lsn, backup_lsn with an
   archive, flush_lsn - keep size if set, the flush_lsn of each peer heard from within
   ``peer_hold``, the position of each replication consumer, connected or gone for less
   than ``peer_hold``)``), crash-safely
   (:meth:`Timeline.remove_wal_before`). Without an archive and without a keep size the
   service does not run at all.

Failures never stop the timeline: an archive error is counted (by ``kind``), shown in the
status (``last_error``) and logged once per distinct message, and the step is retried after
1 s doubling to 30 s. Nothing is removed that the horizon does not allow, so an archive
that refuses uploads holds removal back (WAL then grows on disk: the status shows the lag).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import Final, Protocol

import attrs
import trio

from ..core import (
    ArchiveError,
    Lsn,
    NodeId,
    SafekeeperError,
    TenantTimelineId,
    UploaderChoice,
    choose_uploader,
    removal_horizon,
)
from ..storage import Archive, segment_key
from ._disk_guard import DiskGuard
from ._registry import TimelineService
from ._timeline import Timeline, TimelineBroken

__all__ = [
    "LifecycleConfig",
    "LifecycleObserver",
    "LifecycleStatus",
    "lifecycle_step",
    "read_segment",
    "serve_wal_lifecycle",
    "wal_lifecycle_service",
]

log = logging.getLogger(__name__)

_READ_CHUNK: Final = 1 << 20
UPLOADS_AT_ONCE: Final = 4
"""Segments a timeline's uploader has in flight when several are due. A ``put`` mostly
waits: on fsyncs (``file://``) or round trips (``s3://``), and on SHA-256 in a worker
thread; one at a time, uploads fell behind a busy ingest (0.70-0.78 of its rate on the
benchmark). Segments are read one after another (one reader keeps the store's read-ahead
useful) and held in memory until their ``put`` ends: 64 MiB of 16 MiB segments at most."""
NODE_UPLOADS_AT_ONCE: Final = 16
"""Segments in flight for all timelines of a node together (``LifecycleConfig.uploads``):
after an archive outage every timeline has a backlog, and 256 MiB of 16 MiB segments in
memory is the most the node spends on them."""


class LifecycleObserver(Protocol):
    """Node-wide counters of the lifecycle (metrics, low cardinality)."""

    def archive_uploaded(self, nbytes: int) -> None: ...

    def archive_failed(self, kind: str) -> None: ...

    def wal_segments_removed(self, n: int, nbytes: int) -> None: ...


class _NoObserver:
    def archive_uploaded(self, nbytes: int) -> None:
        pass

    def archive_failed(self, kind: str) -> None:
        pass

    def wal_segments_removed(self, n: int, nbytes: int) -> None:
        pass


@attrs.frozen(kw_only=True)
class LifecycleConfig:
    """``archive``: where segments go (``None``: no archive). ``keep_bytes``: WAL kept
    behind ``flush_lsn`` at least (and, without an archive, at most, give or take a
    segment); ``None``: no keep size. ``heartbeat_timeout``: a peer is alive (a candidate
    uploader) while its info is younger. ``peer_hold``: a peer heard from within this many
    seconds keeps the WAL from its flush position on (L3), so that a lagging or restarted
    peer can still catch up from us. ``coalesce``: after a change, wait this long before
    the next step (one step per burst of appends, not one per append)."""

    archive: Archive | None = None
    keep_bytes: int | None = None
    heartbeat_timeout: float = 5.0
    peer_hold: float = 600.0
    start_delay: float = 0.0
    """Seconds to wait before the first step: a node that just started has not heard
    from its peers yet and would count itself the only caught-up node (every node would
    upload the first segments; harmless, but wasted). A node passes its heartbeat
    timeout."""
    coalesce: float = 0.05
    idle_check: float = 30.0
    retry_min: float = 1.0
    retry_max: float = 30.0
    uploads: trio.CapacityLimiter = attrs.field(
        factory=lambda: trio.CapacityLimiter(NODE_UPLOADS_AT_ONCE), eq=False)
    """Segments being uploaded at once by all timelines sharing this config (a node builds
    one): each is held in memory until its put ends."""

    @property
    def enabled(self) -> bool:
        """Whether anything is ever archived or removed."""
        return self.archive is not None or self.keep_bytes is not None


@attrs.define
class LifecycleStatus:
    """What the status JSON's ``wal_lifecycle`` object shows for one timeline."""

    choice: UploaderChoice | None = None
    uploaded_segments: int = 0
    uploaded_bytes: int = 0
    last_uploaded: str | None = None
    removed_segments: int = 0
    upload_seconds: float = 0.0
    """Busy time of the uploads (read, put, verify, persist ``backup_lsn``)."""
    removal_seconds: float = 0.0
    """Busy time of the removals (record the horizon, unlink, fsync)."""
    removed_bytes: int = 0
    failures: int = 0
    failures_by_kind: dict[str, int] = attrs.Factory(dict)
    last_error: str | None = None
    last_error_kind: str | None = None
    last_error_at: float | None = None
    committed_runs: list[tuple[int, float]] = attrs.Factory(list)
    """``(first segment number, wall-clock time)``: the segments from that number on (up
    to the next run's) were seen complete and committed at that time; runs below the
    segment being archived are dropped (:meth:`note_committed`)."""
    seen_end: int = 0
    """Segments below this number were seen complete and committed."""

    def note_committed(self, backup_lsn: Lsn, commit_lsn: Lsn, seg_size: int,
                       now: float) -> None:
        """Record when segments became complete and committed (for the lag in seconds):
        called on every step, so the time is when this node first saw it (after a
        restart: the restart)."""
        first, done = int(backup_lsn) // seg_size, int(commit_lsn) // seg_size
        if done > self.seen_end:
            self.committed_runs.append((max(first, self.seen_end), now))
            self.seen_end = done
        runs = self.committed_runs
        while len(runs) > 1 and runs[1][0] <= first:
            del runs[0]

    def archive_lag_seconds(self, backup_lsn: Lsn, commit_lsn: Lsn, seg_size: int,
                            now: float) -> float:
        """Seconds since the oldest complete, committed segment that is not archived yet
        became so (0 when every complete committed segment is archived)."""
        first, done = int(backup_lsn) // seg_size, int(commit_lsn) // seg_size
        if first >= done:
            return 0.0
        since = next((t for start, t in reversed(self.committed_runs) if start <= first),
                     None)
        return 0.0 if since is None else max(0.0, now - since)

    def failed(self, kind: str, message: str) -> None:
        self.failures += 1
        self.failures_by_kind[kind] = self.failures_by_kind.get(kind, 0) + 1
        self.last_error, self.last_error_kind = message, kind
        self.last_error_at = time.time()

    def to_json(self, timeline: Timeline, config: LifecycleConfig,
                guard: DiskGuard | None = None) -> dict[str, object]:
        snap = timeline.snapshot()
        archiving = config.archive is not None
        lag = max(0, int(snap.commit_lsn) - int(snap.backup_lsn)) if archiving else None
        lag_seconds = (self.archive_lag_seconds(snap.backup_lsn, snap.commit_lsn,
                                                snap.wal_seg_size, time.time())
                       if archiving else None)
        return {
            "archive": config.archive.url if config.archive is not None else None,
            "wal_keep_size": config.keep_bytes,
            "backup_lsn": str(snap.backup_lsn),
            "removal_horizon": str(timeline.store.start_lsn),
            "archive_lag_bytes": lag,
            "archive_lag_seconds": lag_seconds,
            "uploader": (int(self.choice.uploader) if self.choice is not None
                         and self.choice.uploader is not None else None),
            "uploaded_segments": self.uploaded_segments,
            "uploaded_bytes": self.uploaded_bytes,
            "last_uploaded": self.last_uploaded,
            "removed_segments": self.removed_segments,
            "upload_seconds": round(self.upload_seconds, 6),
            "removal_seconds": round(self.removal_seconds, 6),
            "removed_bytes": self.removed_bytes,
            "wal_disk_bytes": timeline.wal_disk_bytes,
            "failures": self.failures,
            "failures_by_kind": dict(self.failures_by_kind),
            "last_error": self.last_error,
            "last_error_kind": self.last_error_kind,
            "last_error_at": self.last_error_at,
            "disk": None if guard is None else guard.to_json(),
        }


LifecycleReport = Callable[[], dict[str, object]]
"""A timeline's lifecycle status as JSON, read by the node's status endpoint."""


def wal_lifecycle_service(
    node_id: NodeId,
    config: LifecycleConfig,
    observer: LifecycleObserver | None = None,
    shown: dict[TenantTimelineId, LifecycleReport] | None = None,
    guard: DiskGuard | None = None,
) -> TimelineService:
    """The lifecycle as a per-timeline service of a :class:`TimelineRegistry`; with
    nothing to do (no archive, no keep size) it only reports its status.

    Each timeline's status is registered in ``shown`` (the registry the node's status
    endpoint reads, ``NodeContext.lifecycle_statuses``) while the timeline runs here,
    with the disk usage ``guard`` (the node's disk guard) measured."""

    async def run(timeline: Timeline) -> None:
        ttid = timeline.ttid
        status = LifecycleStatus()

        def report() -> dict[str, object]:
            return status.to_json(timeline, config, guard)

        if shown is not None:
            shown[ttid] = report
        try:
            if config.enabled:
                await serve_wal_lifecycle(timeline, node_id, config, status, observer)
            else:
                await trio.sleep_forever()  # keep the status shown while the timeline runs
        finally:
            if shown is not None and shown.get(ttid) is report:  # not a reloaded one's
                del shown[ttid]

    return run


async def serve_wal_lifecycle(
    timeline: Timeline,
    node_id: NodeId,
    config: LifecycleConfig,
    status: LifecycleStatus,
    observer: LifecycleObserver | None = None,
) -> None:
    """Archive and remove for ``timeline`` (module docstring); never returns unless
    cancelled. Archive and storage errors are retried with back-off (1 s doubling to 30 s);
    a broken timeline is waited out (its WAL is left as it is)."""
    observer = observer if observer is not None else _NoObserver()
    delay = config.retry_min
    await trio.sleep(config.start_delay)
    while True:
        try:
            progressed = await lifecycle_step(timeline, node_id, config, status, observer)
        except (SafekeeperError, OSError) as e:
            if isinstance(e, TimelineBroken):
                await timeline.changed.wait_changed()
                continue
            kind = e.kind if isinstance(e, ArchiveError) else "storage"
            observer.archive_failed(kind)
            if str(e) != status.last_error:
                log.warning("timeline %s: WAL lifecycle: %s (retrying in %.0fs)",
                            timeline.ttid, e, delay)
            status.failed(kind, str(e))
            await trio.sleep(delay)
            delay = min(delay * 2, config.retry_max)
            continue
        delay = config.retry_min
        if progressed:
            await trio.lowlevel.checkpoint()
            continue
        with trio.move_on_after(config.idle_check):
            await timeline.changed.wait_changed()
        await trio.sleep(config.coalesce)


async def lifecycle_step(
    timeline: Timeline,
    node_id: NodeId,
    config: LifecycleConfig,
    status: LifecycleStatus,
    observer: LifecycleObserver,
) -> bool:
    """One upload (if this node is the uploader and a segment is due) and one removal (if
    the horizon moved past a segment). Returns whether anything happened."""
    snap = timeline.snapshot()
    if snap.broken is not None:
        raise TimelineBroken(f"timeline {timeline.ttid} is stopped: {snap.broken}")
    seg_size = snap.wal_seg_size
    progressed = False
    if config.archive is not None:
        status.note_committed(snap.backup_lsn, snap.commit_lsn, seg_size, time.time())
        peers = timeline.alive_peers(trio.current_time(), config.heartbeat_timeout)
        choice = choose_uploader(timeline.ttid, node_id, snap.last_log_term, snap.flush_lsn,
                                 snap.commit_lsn, peers)
        if status.choice is None or status.choice.uploader != choice.uploader:
            log.info("timeline %s: WAL uploader: %s", timeline.ttid, choice)
        status.choice = choice
        if choice.uploader == node_id:
            progressed = await _upload_due(timeline, config, status, observer)
            snap = timeline.snapshot()
    now = trio.current_time()
    horizon = removal_horizon(
        commit_lsn=snap.commit_lsn, flush_lsn=snap.flush_lsn, seg_size=seg_size,
        backup_lsn=snap.backup_lsn if config.archive is not None else None,
        keep_bytes=config.keep_bytes,
        peer_holds=[p.flush_lsn for p in timeline.current_peers()
                    if now - p.received_at <= config.peer_hold],
        consumer_holds=timeline.consumers.holds(now, config.peer_hold),
    )
    if horizon > timeline.store.start_lsn:
        began = time.perf_counter()
        removed = await timeline.remove_wal_before(horizon)
        status.removal_seconds += time.perf_counter() - began
        status.removed_segments += removed
        status.removed_bytes += removed * seg_size
        observer.wal_segments_removed(removed, removed * seg_size)
        log.debug("timeline %s: removed %d WAL segment files below %s", timeline.ttid,
                  removed, horizon)
        progressed = True
    if progressed and status.last_error is not None:
        status.last_error = status.last_error_kind = None
    return progressed


async def _upload_due(
    timeline: Timeline, config: LifecycleConfig, status: LifecycleStatus,
    observer: LifecycleObserver,
) -> bool:
    """Upload the segments after ``backup_lsn`` that are complete and committed (L2), up to
    ``UPLOADS_AT_ONCE`` at once; advance ``backup_lsn`` over the prefix that succeeded, then
    raise the first failure if there was one."""
    archive = config.archive
    assert archive is not None
    snap = timeline.snapshot()
    seg_size = snap.wal_seg_size
    first = snap.backup_lsn.segment_number(seg_size)
    due = [segno for segno in range(first, first + UPLOADS_AT_ONCE)
           if (segno + 1) * seg_size <= snap.commit_lsn]
    if not due:
        return False
    began = time.perf_counter()
    uploaded: dict[int, int] = {}  # segno -> bytes, once its put was verified
    failures: dict[int, SafekeeperError | OSError] = {}
    limiter = config.uploads

    async def put(segno: int, data: bytes, token: object) -> None:
        try:
            await archive.put(segment_key(timeline.ttid, segno, seg_size), data)
        except (SafekeeperError, OSError) as e:
            failures[segno] = e
        else:
            uploaded[segno] = len(data)
        finally:
            limiter.release_on_behalf_of(token)

    async with trio.open_nursery() as nursery:
        for segno in due:
            token = object()  # one per segment: the limiter counts segments in memory
            await limiter.acquire_on_behalf_of(token)
            try:
                data = await read_segment(timeline, segno, seg_size)
            except BaseException as e:
                limiter.release_on_behalf_of(token)
                if not isinstance(e, (SafekeeperError, OSError)):
                    raise
                failures[segno] = e
                break  # the puts already started finish; nothing after a gap counts
            nursery.start_soon(put, segno, data, token)
    prefix = list(itertools.takewhile(lambda segno: segno in uploaded, due))
    if prefix:
        await timeline.advance_backup_lsn(Lsn((prefix[-1] + 1) * seg_size))
        status.upload_seconds += time.perf_counter() - began
        status.uploaded_segments += len(prefix)
        status.uploaded_bytes += sum(uploaded[segno] for segno in prefix)
        status.last_uploaded = segment_key(timeline.ttid, prefix[-1], seg_size)
        for segno in prefix:
            observer.archive_uploaded(uploaded[segno])
    if failures:
        raise failures[min(failures)]
    return True


async def read_segment(timeline: Timeline, segno: int, seg_size: int) -> bytes:
    """The whole of segment ``segno`` as this node's file holds it: bytes before the
    timeline's start (a timeline that starts mid-segment) are zeros there, and here.

    Raises ``WalRemoved`` if the segment was removed, ``SafekeeperError`` if it is not all
    durable yet."""
    seg_start = segno * seg_size
    first = max(seg_start, int(timeline.snapshot().timeline_start_lsn))
    parts = [bytes(first - seg_start)] if first > seg_start else []
    pos = Lsn(first)
    end = seg_start + seg_size
    while int(pos) < end:
        chunk = await timeline.read_wal(pos, min(_READ_CHUNK, end - int(pos)))
        if not chunk:
            raise SafekeeperError(
                f"timeline {timeline.ttid}: WAL at {pos} is not durable yet; segment "
                f"{segno} cannot be archived")
        parts.append(chunk)
        pos = pos + len(chunk)
    return b"".join(parts)
