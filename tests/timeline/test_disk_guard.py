"""The node's disk guard over a fake measurement (rules U2-U4), and a timeline behind it."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from safekeeper_recovery.core import (
    AppendRequest,
    DiskLimit,
    DiskUsageExceeded,
    Lsn,
    NodeId,
    ProposerElected,
    TermHistory,
    VoteRequest,
)
from safekeeper_recovery.storage import DiskUsage
from safekeeper_recovery.testing import make_ttid
from safekeeper_recovery.timeline import DiskGuard, MemoryBackend, TimelineParams, TimelineRegistry

SIZE = 100 << 20
SEG = 1 << 20
START = Lsn(SEG)


class FakeDisk:
    """``used`` bytes of a ``SIZE`` file system; counts the measurements."""

    def __init__(self, used: int) -> None:
        self.used = used
        self.measured = 0
        self.fail: OSError | None = None

    def __call__(self, path: Path) -> DiskUsage:
        self.measured += 1
        if self.fail is not None:
            raise self.fail
        return DiskUsage(size=SIZE, used=self.used, available=SIZE - self.used)


async def test_u2_u3_refuse_past_the_limit_and_resume_below_the_margin() -> None:
    disk = FakeDisk(used=40 << 20)
    guard = DiskGuard(Path("/data"), DiskLimit(percent=50), measure=disk)
    await guard.refresh()
    await guard.admit(1000)
    disk.used = (50 << 20) + 1
    await guard.refresh()
    assert guard.refusing is not None
    assert "--max-disk-usage 50%" in guard.refusing
    with pytest.raises(DiskUsageExceeded) as refused:
        await guard.admit(1)
    assert refused.value.close_code == 4012
    assert not refused.value.permanent
    assert guard.refused_appends == 1
    disk.used = 50 << 20  # under the limit, but not by the margin (1 MiB here)
    await guard.refresh()
    assert guard.to_json()["refusing"] is not None
    disk.used = (49 << 20) - 1
    await guard.refresh()
    assert guard.to_json()["refusing"] is None
    assert guard.paused is None
    await guard.admit(1)


async def test_u4_admitted_bytes_that_could_pass_the_limit_measure_again() -> None:
    disk = FakeDisk(used=(50 << 20) - 3000)
    guard = DiskGuard(Path("/data"), DiskLimit(percent=50), measure=disk)
    await guard.refresh()
    await guard.admit(1000)
    await guard.admit(1000)
    assert disk.measured == 1, "within the limit: no measurement per append"
    disk.used = (50 << 20) + 1  # a new segment file was created meanwhile
    with pytest.raises(DiskUsageExceeded):
        await guard.admit(1001)
    assert disk.measured == 2


async def test_a_failed_measurement_keeps_the_last_decision() -> None:
    disk = FakeDisk(used=10 << 20)
    guard = DiskGuard(Path("/data"), DiskLimit(percent=50), measure=disk)
    await guard.refresh()
    disk.fail = OSError(5, "Input/output error")
    await guard.refresh()
    assert guard.refusing is None
    assert guard.usage is not None
    assert guard.usage.used == 10 << 20


async def test_without_a_limit_it_measures_and_never_refuses() -> None:
    disk = FakeDisk(used=SIZE)
    guard = DiskGuard(Path("/data"), None, measure=disk)
    await guard.refresh()
    await guard.admit(1 << 20)
    assert guard.to_json()["fs_used_bytes"] == SIZE
    assert guard.to_json()["limit_bytes"] is None


async def test_wait_resumed_returns_once_space_is_back(nursery: trio.Nursery) -> None:
    disk = FakeDisk(used=60 << 20)
    guard = DiskGuard(Path("/data"), DiskLimit(percent=50), measure=disk)
    await guard.refresh()
    resumed = trio.Event()

    async def waiter() -> None:
        await guard.wait_resumed()
        resumed.set()

    nursery.start_soon(waiter)
    await trio.testing.wait_all_tasks_blocked()
    assert not resumed.is_set()
    disk.used = 10 << 20
    await guard.refresh()
    with trio.fail_after(5):
        await resumed.wait()


async def test_a_timeline_refuses_appends_carrying_wal_and_writes_nothing(
    nursery: trio.Nursery,
) -> None:
    disk = FakeDisk(used=10 << 20)
    guard = DiskGuard(Path("/data"), DiskLimit(percent=50), measure=disk)
    await guard.refresh()
    reg = TimelineRegistry(NodeId(1), MemoryBackend(), guard=guard)
    await nursery.start(reg.serve)
    tl, _ = await reg.create(make_ttid(1), TimelineParams(START, SEG))
    await tl.process(VoteRequest(1))
    await tl.process(ProposerElected(1, START, TermHistory.of((0, START), (1, START))))
    await tl.process(AppendRequest(1, START, START, Lsn(0), b"x" * 4096))
    assert tl.flush_lsn == START + 4096
    disk.used = 60 << 20
    await guard.refresh()
    with pytest.raises(DiskUsageExceeded):
        await tl.process(AppendRequest(1, START + 4096, START + 4096, Lsn(0), b"y" * 4096))
    assert tl.flush_lsn == START + 4096, "refused WAL was written"
    assert tl.broken is None
    # The refused append's header was taken: its commit_lsn lets committed WAL be archived
    # and removed, which is what frees the space.
    assert tl.commit_lsn == START + 4096
    # A header the acceptor refuses (R7, a gap) is still reported as the disk's refusal.
    with pytest.raises(DiskUsageExceeded):
        await tl.process(AppendRequest(1, START + 8192, START, Lsn(0), b"z" * 4096))
    assert tl.flush_lsn == START + 4096
