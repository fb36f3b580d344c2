"""The timeline layer: one write path, breaking on storage failure, waking, deletion."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from safekeeper_recovery.core import (
    AppendRequest,
    Lsn,
    NodeId,
    PeerInfo,
    ProposerElected,
    TermHistory,
    VoteRequest,
)
from safekeeper_recovery.storage import CONTROL_FILE_NAME
from safekeeper_recovery.testing import make_ttid
from safekeeper_recovery.timeline import (
    FileBackend,
    MemoryBackend,
    Timeline,
    TimelineBroken,
    TimelineConflict,
    TimelineParams,
    TimelineRegistry,
)

START = Lsn(0x100_0000)
SEG = 1 << 20




async def elect(tl: Timeline, term: int = 1) -> None:
    await tl.process(VoteRequest(term))
    await tl.process(ProposerElected(term, START, TermHistory.of((0, START), (term, START))))


def peer(node: int, flush: Lsn, at: float) -> PeerInfo:
    return PeerInfo(NodeId(node), 1, 1, flush, START, "http://x", "ws://x", at)


async def test_a_storage_failure_breaks_the_timeline_and_refuses_writes(
    nursery: trio.Nursery,
) -> None:
    reg = TimelineRegistry(NodeId(1), MemoryBackend())
    await nursery.start(reg.serve)
    tl, _ = await reg.create(make_ttid(1), TimelineParams(START, SEG))
    await elect(tl)
    tl.store.store.close()  # every further store call fails like a dead disk
    with pytest.raises(TimelineBroken, match="storage failure"):
        await tl.process(AppendRequest(1, START, Lsn(0), Lsn(0), b"x" * 10))
    assert tl.broken is not None
    with pytest.raises(TimelineBroken, match="stopped"):
        await tl.process(VoteRequest(2))
    assert tl.snapshot().broken == tl.broken


async def test_repeated_peer_info_does_not_wake_waiters_but_news_does(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    reg = TimelineRegistry(NodeId(1), MemoryBackend())
    await nursery.start(reg.serve)
    tl, _ = await reg.create(make_ttid(1), TimelineParams(START, SEG))
    await tl.record_peer_info(peer(2, START, trio.current_time()))
    version = tl.changed.version
    await tl.record_peer_info(peer(2, START, trio.current_time() + 1.0))
    assert tl.changed.version == version, "unchanged info one second later is not news"
    await tl.record_peer_info(peer(2, START + 100, trio.current_time() + 2.0))
    assert tl.changed.version > version, "a moved flush_lsn is news"
    version = tl.changed.version
    await tl.record_peer_info(peer(2, START + 100, trio.current_time() + 10.0))
    assert tl.changed.version > version, "a peer back after silence is news"


async def test_deleting_a_timeline_cancels_what_is_attached(nursery: trio.Nursery) -> None:
    reg = TimelineRegistry(NodeId(1), MemoryBackend())
    await nursery.start(reg.serve)
    tl, _ = await reg.create(make_ttid(1), TimelineParams(START, SEG))
    cancelled = trio.Event()

    async def attached() -> None:
        try:
            async with tl.attach():
                await trio.sleep_forever()
        finally:
            cancelled.set()

    nursery.start_soon(attached)
    await trio.testing.wait_all_tasks_blocked()
    assert await reg.delete(make_ttid(1)) is True
    with trio.fail_after(5):
        await cancelled.wait()
    assert await reg.delete(make_ttid(1)) is False


async def test_create_is_idempotent_and_conflicts_on_other_params(
    nursery: trio.Nursery,
) -> None:
    reg = TimelineRegistry(NodeId(1), MemoryBackend())
    await nursery.start(reg.serve)
    _, created = await reg.create(make_ttid(1), TimelineParams(START, SEG))
    assert created
    _, created = await reg.create(make_ttid(1), TimelineParams(START, SEG))
    assert not created
    with pytest.raises(TimelineConflict):
        await reg.create(make_ttid(1), TimelineParams(START, 2 * SEG))


async def test_a_corrupt_control_file_breaks_only_its_timeline(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        reg = TimelineRegistry(NodeId(1), FileBackend(tmp_path))
        await nursery.start(reg.serve)
        for n in (1, 3):
            tl, _ = await reg.create(make_ttid(n), TimelineParams(START, SEG))
            await elect(tl)
            await tl.process(AppendRequest(1, START, Lsn(0), Lsn(0), b"y" * 5000))
        nursery.cancel_scope.cancel()
    ttid = make_ttid(1)
    control = tmp_path / str(ttid.tenant_id) / str(ttid.timeline_id) / CONTROL_FILE_NAME
    raw = bytearray(control.read_bytes())
    raw[20] ^= 0xFF  # a body byte: only the CRC can tell
    control.write_bytes(bytes(raw))
    async with trio.open_nursery() as nursery:
        reg = TimelineRegistry(NodeId(1), FileBackend(tmp_path))
        await nursery.start(reg.serve)
        assert make_ttid(1) in reg.broken
        assert "checksum" in reg.broken[make_ttid(1)]
        good = reg.get(make_ttid(3))
        assert good.snapshot().flush_lsn == START + 5000
        nursery.cancel_scope.cancel()


async def test_the_write_path_feeds_the_node_observer(nursery: trio.Nursery) -> None:
    class Counting:
        written = 0
        flushes = 0

        def wal_written(self, n: int) -> None:
            self.written += n

        def wal_flushed(self) -> None:
            self.flushes += 1

    counting = Counting()
    reg = TimelineRegistry(NodeId(1), MemoryBackend(), observer=counting)
    await nursery.start(reg.serve)
    tl, _ = await reg.create(make_ttid(1), TimelineParams(START, SEG))
    await elect(tl)
    await tl.process(AppendRequest(1, START, Lsn(0), Lsn(0), b"z" * 3000))
    assert (counting.written, counting.flushes) == (3000, 1)
