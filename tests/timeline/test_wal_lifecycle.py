"""The WAL lifecycle of one timeline over the memory twins (archive upload, removal)."""

from __future__ import annotations

import hashlib

import attrs
import pytest
import trio
import trio.testing

from safekeeper_recovery.core import (
    AppendRequest,
    ArchiveError,
    Lsn,
    NodeId,
    PeerInfo,
    ProposerElected,
    TenantTimelineId,
    TermHistory,
    VoteRequest,
    WalRemoved,
    decode_state,
    uploader_rank,
)
from safekeeper_recovery.storage import MemoryArchive, segment_key
from safekeeper_recovery.testing import make_ttid
from safekeeper_recovery.timeline import (
    LifecycleConfig,
    LifecycleReport,
    LifecycleStatus,
    MemoryBackend,
    Timeline,
    TimelineParams,
    TimelineRegistry,
    lifecycle_step,
    serve_wal_lifecycle,
    wal_lifecycle_service,
)
from safekeeper_recovery.timeline._wal_lifecycle import UPLOADS_AT_ONCE

SEG = 1 << 20
START = Lsn(SEG)
ME = NodeId(1)


class Counts:
    def __init__(self) -> None:
        self.uploaded = 0
        self.failed: list[str] = []
        self.removed = 0

    def archive_uploaded(self, nbytes: int) -> None:
        self.uploaded += nbytes

    def archive_failed(self, kind: str) -> None:
        self.failed.append(kind)

    def wal_segments_removed(self, n: int, nbytes: int) -> None:
        self.removed += n


async def timeline_with_wal(nursery: trio.Nursery, nbytes: int, commit: int) -> Timeline:
    """A timeline of node 1 holding ``nbytes`` of WAL from START, committed up to
    START + ``commit``."""
    reg = TimelineRegistry(ME, MemoryBackend())
    await nursery.start(reg.serve)
    tl, _ = await reg.create(make_ttid(1), TimelineParams(START, SEG))
    await tl.process(VoteRequest(1))
    await tl.process(ProposerElected(1, START, TermHistory.of((0, START), (1, START))))
    pos = START
    for i in range(0, nbytes, SEG // 2):
        data = hashlib.sha256(b"%d" % i).digest() * (min(SEG // 2, nbytes - i) // 32)
        await tl.process(AppendRequest(1, pos, START + commit, Lsn(0), data))
        pos = pos + len(data)
    await tl.process(AppendRequest(1, pos, START + commit, Lsn(0), b""))
    assert tl.commit_lsn == START + commit
    return tl


async def run_steps(tl: Timeline, config: LifecycleConfig, status: LifecycleStatus,
                    counts: Counts) -> None:
    """Steps until nothing is left to do (each step does one segment at most)."""
    for _ in range(100):
        if not await lifecycle_step(tl, ME, config, status, counts):
            return
    raise AssertionError("the lifecycle never settled")


async def test_l2_only_complete_committed_segments_are_uploaded_then_removed(
    nursery: trio.Nursery,
) -> None:
    tl = await timeline_with_wal(nursery, 5 * SEG + SEG // 2, commit=3 * SEG + 100)
    archive = MemoryArchive()
    status, counts = LifecycleStatus(), Counts()
    await run_steps(tl, LifecycleConfig(archive=archive), status, counts)
    ttid = tl.ttid
    assert sorted(archive.objects) == [segment_key(ttid, n, SEG) for n in (1, 2, 3)]
    snap = tl.snapshot()
    assert snap.backup_lsn == Lsn(4 * SEG), "segments wholly below commit_lsn only"
    assert tl.store.start_lsn == Lsn(4 * SEG), "removed up to the archived horizon"
    body = tl.control.load()
    assert body is not None
    assert decode_state(body).backup_lsn == Lsn(4 * SEG), "durable"
    assert counts.uploaded == 3 * SEG
    assert counts.removed == 3
    json = status.to_json(tl, LifecycleConfig(archive=archive))
    assert json["uploader"] == 1
    assert json["removal_horizon"] == "0/400000"
    assert json["archive_lag_bytes"] == 100


async def _wal(tl: Timeline, segno: int) -> bytes:
    return await tl.read_wal(Lsn(segno * SEG), SEG)


async def test_archived_objects_hold_exactly_the_wal_of_the_node(nursery: trio.Nursery) -> None:
    tl = await timeline_with_wal(nursery, 3 * SEG, commit=3 * SEG)
    before = {n: await _wal(tl, n) for n in (1, 2, 3)}
    archive = MemoryArchive()
    await run_steps(tl, LifecycleConfig(archive=archive, keep_bytes=3 * SEG),
                    LifecycleStatus(), Counts())
    for n, data in before.items():
        assert await archive.get(segment_key(tl.ttid, n, SEG)) == data
    assert tl.store.start_lsn == START, "keep size holds the removal back"


async def test_nothing_unarchived_is_removed_while_the_archive_fails(
    nursery: trio.Nursery,
) -> None:
    tl = await timeline_with_wal(nursery, 4 * SEG, commit=4 * SEG)
    archive = MemoryArchive()
    archive.failure = ArchiveError("access denied", kind="auth")
    status, counts = LifecycleStatus(), Counts()
    config = LifecycleConfig(archive=archive, retry_min=0.01, retry_max=0.01)
    with trio.move_on_after(0.2):
        await serve_wal_lifecycle(tl, ME, config, status, counts)
    assert tl.store.start_lsn == START
    assert tl.snapshot().backup_lsn == START
    assert counts.failed
    assert set(counts.failed) == {"auth"}
    assert status.last_error == "access denied"
    assert status.last_error_kind == "auth"
    archive.failure = None
    await run_steps(tl, config, status, counts)
    assert tl.store.start_lsn == Lsn(5 * SEG)
    assert status.last_error is None


async def test_a_node_that_is_not_the_uploader_removes_only_what_a_peer_archived(
    nursery: trio.Nursery,
) -> None:
    tl = await timeline_with_wal(nursery, 4 * SEG, commit=4 * SEG)
    snap = tl.snapshot()
    archive = MemoryArchive()
    # A caught-up peer that outranks us for this timeline (rule L1) is the uploader.
    other = next(n for n in range(2, 10_000)
                 if uploader_rank(tl.ttid, NodeId(n)) > uploader_rank(tl.ttid, ME))
    await tl.record_peer_info(PeerInfo(NodeId(other), 1, 1, snap.flush_lsn, snap.commit_lsn,
                                       "http://x", "ws://x", trio.current_time()))
    status = LifecycleStatus()
    await run_steps(tl, LifecycleConfig(archive=archive), status, Counts())
    assert status.choice is not None
    assert status.choice.uploader == NodeId(other)
    assert archive.puts == 0
    assert tl.store.start_lsn == START
    # The uploader tells us it archived two segments: we remove them, not more.
    await tl.record_peer_info(PeerInfo(NodeId(other), 1, 1, snap.flush_lsn, snap.commit_lsn,
                                       "http://x", "ws://x", trio.current_time(),
                                       backup_lsn=Lsn(3 * SEG)))
    await run_steps(tl, LifecycleConfig(archive=archive), LifecycleStatus(), Counts())
    assert tl.store.start_lsn == Lsn(3 * SEG)
    assert archive.puts == 0


async def test_keep_size_without_archive_bounds_the_wal_kept(nursery: trio.Nursery) -> None:
    tl = await timeline_with_wal(nursery, 6 * SEG, commit=5 * SEG)
    await run_steps(tl, LifecycleConfig(keep_bytes=2 * SEG), LifecycleStatus(), Counts())
    assert tl.store.start_lsn == Lsn(5 * SEG), "min(commit, flush - keep) = 5 MiB"


async def test_a_read_below_the_horizon_is_wal_removed_never_garbage(
    nursery: trio.Nursery,
) -> None:
    tl = await timeline_with_wal(nursery, 3 * SEG, commit=3 * SEG)
    await run_steps(tl, LifecycleConfig(keep_bytes=SEG), LifecycleStatus(), Counts())
    assert tl.store.start_lsn == Lsn(3 * SEG)
    with pytest.raises(WalRemoved, match="was removed"):
        await tl.read_wal(START, 100)


async def test_l3_a_lagging_peer_holds_removal_until_it_is_silent_past_the_hold(
    nursery: trio.Nursery,
) -> None:
    tl = await timeline_with_wal(nursery, 4 * SEG, commit=4 * SEG)
    config = LifecycleConfig(keep_bytes=0, peer_hold=60.0)
    lagging = PeerInfo(NodeId(2), 1, 1, START + SEG + 5, START, "http://x", "ws://x",
                       trio.current_time())
    await tl.record_peer_info(lagging)
    await run_steps(tl, config, LifecycleStatus(), Counts())
    assert tl.store.start_lsn == START + SEG, "kept from the peer's flush position's segment"
    # The same peer, last heard from longer ago than the hold window, holds nothing.
    tl.peers[NodeId(2)] = attrs.evolve(lagging, received_at=trio.current_time() - 61.0)
    await run_steps(tl, config, LifecycleStatus(), Counts())
    assert tl.store.start_lsn == START + 4 * SEG


async def test_the_service_shows_its_status_in_the_node_registry_while_the_timeline_runs(
    nursery: trio.Nursery,
) -> None:
    """The status lives in a registry the node owns (issue 13), not on the timeline: it is
    there while the timeline runs, also with nothing to do, and gone once it stops."""
    shown: dict[TenantTimelineId, LifecycleReport] = {}
    service = wal_lifecycle_service(ME, LifecycleConfig(), shown=shown)
    reg = TimelineRegistry(ME, MemoryBackend(), services=[service])
    await nursery.start(reg.serve)
    tl, _ = await reg.create(make_ttid(2), TimelineParams(START, SEG))
    await trio.testing.wait_all_tasks_blocked()  # the service has started and registered
    report = shown[tl.ttid]()
    assert report["archive"] is None
    assert report["removal_horizon"] == str(START)
    await reg.delete(tl.ttid)
    await trio.testing.wait_all_tasks_blocked()
    assert tl.ttid not in shown


class _PutsInFlight:
    """A MemoryArchive whose puts wait until ``wanted`` of them are in flight at once (so a
    one-at-a-time uploader never gets past the first), and fail for ``failing`` keys."""

    def __init__(self, wanted: int, failing: frozenset[str] = frozenset()) -> None:
        self.inner = MemoryArchive()
        self.wanted = wanted
        self.failing = failing
        self.in_flight = 0
        self.most_in_flight = 0
        self.all_in = trio.Event()

    async def put(self, key: str, data: bytes) -> object:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight >= self.wanted:
            self.all_in.set()
        try:
            await self.all_in.wait()
            if key in self.failing:
                raise ArchiveError(f"refused {key}", kind="server")
            return await self.inner.put(key, data)
        finally:
            self.in_flight -= 1

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_due_segments_are_uploaded_several_at_once_and_backup_lsn_moves_once(
    nursery: trio.Nursery,
) -> None:
    tl = await timeline_with_wal(nursery, 6 * SEG, commit=6 * SEG)
    archive = _PutsInFlight(UPLOADS_AT_ONCE)
    status, counts = LifecycleStatus(), Counts()
    with trio.fail_after(5):  # one put at a time would wait for the others forever
        assert await lifecycle_step(tl, ME, LifecycleConfig(archive=archive),  # type: ignore[arg-type]
                                    status, counts)
    assert archive.most_in_flight == UPLOADS_AT_ONCE
    assert tl.snapshot().backup_lsn == Lsn((1 + UPLOADS_AT_ONCE) * SEG)
    assert decode_state(tl.control.load() or b"").backup_lsn == tl.snapshot().backup_lsn
    assert sorted(archive.inner.objects) == [
        segment_key(tl.ttid, n, SEG) for n in range(1, 1 + UPLOADS_AT_ONCE)]
    assert (status.uploaded_segments, counts.uploaded) == (UPLOADS_AT_ONCE,
                                                           UPLOADS_AT_ONCE * SEG)


async def test_a_failed_upload_stops_backup_lsn_at_the_prefix_before_it(
    nursery: trio.Nursery,
) -> None:
    tl = await timeline_with_wal(nursery, 4 * SEG, commit=4 * SEG)
    archive = _PutsInFlight(UPLOADS_AT_ONCE, failing=frozenset({segment_key(tl.ttid, 3, SEG)}))
    with pytest.raises(ArchiveError, match="refused"):
        await lifecycle_step(tl, ME, LifecycleConfig(archive=archive),  # type: ignore[arg-type]
                             LifecycleStatus(), Counts())
    # Segments 1 and 2 are archived and counted; 3 failed; 4 was archived after the gap but
    # does not count until 3 is: backup_lsn stops at 3's start, and removal with it.
    assert tl.snapshot().backup_lsn == Lsn(3 * SEG)
    assert tl.store.start_lsn == START  # removal runs in the next step, not after a failure
    archive.failing = frozenset()
    await run_steps(tl, LifecycleConfig(archive=archive), LifecycleStatus(),  # type: ignore[arg-type]
                    Counts())
    assert tl.snapshot().backup_lsn == Lsn(5 * SEG)
    assert tl.store.start_lsn == Lsn(5 * SEG)


async def test_the_node_wide_limit_bounds_the_segments_in_flight(nursery: trio.Nursery) -> None:
    tl = await timeline_with_wal(nursery, 6 * SEG, commit=6 * SEG)
    archive = _PutsInFlight(2)
    config = LifecycleConfig(archive=archive, uploads=trio.CapacityLimiter(2))  # type: ignore[arg-type]
    with trio.fail_after(5):
        assert await lifecycle_step(tl, ME, config, LifecycleStatus(), Counts())
    assert archive.most_in_flight == 2  # two at a time, and the batch still completes
    assert tl.snapshot().backup_lsn == Lsn((1 + UPLOADS_AT_ONCE) * SEG)
    assert config.uploads.borrowed_tokens == 0
