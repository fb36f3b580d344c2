"""Both ends of a snapshot over the memory twins (``timeline/_snapshot.py``, ``_staging.py``):
what a donor streams installs as an equal timeline; a term change or a broken stream
installs nothing; the donor's removal is held while it streams."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing

import pytest
import trio

from safekeeper_recovery.core import (
    AppendRequest,
    Lsn,
    NodeId,
    ProposerElected,
    PullInProgress,
    PullTermChanged,
    SnapshotInvalid,
    TermHistory,
    VoteRequest,
)
from safekeeper_recovery.testing import make_ttid
from safekeeper_recovery.timeline import (
    MemoryBackend,
    Timeline,
    TimelineConflict,
    TimelineParams,
    TimelineRegistry,
    receive_snapshot,
    snapshot_frames,
)

SEG = 1 << 20
START = Lsn(SEG)
TTID = make_ttid(15)


async def donor_with_wal(nursery: trio.Nursery, nbytes: int) -> Timeline:
    reg = TimelineRegistry(NodeId(1), MemoryBackend())
    await nursery.start(reg.serve)
    tl, _ = await reg.create(TTID, TimelineParams(START, SEG))
    await tl.process(VoteRequest(1))
    await tl.process(ProposerElected(1, START, TermHistory.of((0, START), (1, START))))
    pos = START
    for i in range(0, nbytes, SEG // 4):
        data = hashlib.sha256(b"%d" % i).digest() * (min(SEG // 4, nbytes - i) // 32)
        await tl.process(AppendRequest(1, pos, pos, Lsn(0), data))
        pos = pos + len(data)
    await tl.process(AppendRequest(1, pos, pos, Lsn(0), b""))
    return tl


async def receiver(nursery: trio.Nursery) -> TimelineRegistry:
    reg = TimelineRegistry(NodeId(3), MemoryBackend())
    await nursery.start(reg.serve)
    return reg


async def test_a_snapshot_installs_the_donors_wal_and_state() -> None:
    async with trio.open_nursery() as nursery:
        donor = await donor_with_wal(nursery, 3 * SEG + 4096)
        reg = await receiver(nursery)
        async with aclosing(snapshot_frames(donor)) as frames:
            pulled = await receive_snapshot(reg, TTID, frames)
        assert reg.get(TTID) is pulled
        a, b = donor.snapshot(), pulled.snapshot()
        assert (b.term, b.term_history, b.flush_lsn, b.commit_lsn) == (
            a.term, a.term_history, a.flush_lsn, a.commit_lsn)
        assert await pulled.digest(START, a.flush_lsn) == await donor.digest(START, a.flush_lsn)
        with pytest.raises(TimelineConflict):  # never over an existing timeline (I4)
            async with aclosing(snapshot_frames(donor)) as frames:
                await receive_snapshot(reg, TTID, frames)
        nursery.cancel_scope.cancel()


async def test_the_installed_term_is_at_least_the_highest_term_peers_reported() -> None:
    async with trio.open_nursery() as nursery:
        donor = await donor_with_wal(nursery, SEG)
        reg = await receiver(nursery)
        async with aclosing(snapshot_frames(donor)) as frames:
            pulled = await receive_snapshot(reg, TTID, frames, min_term=9)
        assert (pulled.term, donor.term) == (9, 1)
        assert pulled.snapshot().term_history == donor.snapshot().term_history
        nursery.cancel_scope.cancel()


async def bump_term_after_second_frame(donor: Timeline, frames: AsyncIterator[bytes]
                                       ) -> AsyncGenerator[bytes, None]:
    """The donor's frames, its term bumped once the second (the first WAL) went out."""
    n = 0
    async for frame in frames:
        yield frame
        n += 1
        if n == 2:
            await donor.bump_term()


async def cut_in_third_frame(donor: Timeline, frames: AsyncIterator[bytes]
                             ) -> AsyncGenerator[bytes, None]:
    """The donor's frames up to half of the third, then the end of the stream."""
    n = 0
    async for frame in frames:
        n += 1
        if n == 3:
            yield frame[: len(frame) // 2]
            return
        yield frame


@pytest.mark.parametrize(("nbytes", "spoil", "error"), [
    pytest.param(3 * SEG, bump_term_after_second_frame, PullTermChanged, id="term-change"),
    pytest.param(2 * SEG, cut_in_third_frame, SnapshotInvalid, id="broken-stream"),
])
async def test_a_snapshot_that_goes_wrong_midway_installs_nothing_and_leaves_no_staging(
    nbytes: int,
    spoil: Callable[[Timeline, AsyncIterator[bytes]], AsyncGenerator[bytes, None]],
    error: type[Exception],
) -> None:
    async with trio.open_nursery() as nursery:
        donor = await donor_with_wal(nursery, nbytes)
        reg = await receiver(nursery)
        with pytest.raises(error):
            async with (aclosing(snapshot_frames(donor)) as frames,
                        aclosing(spoil(donor, frames)) as stream):
                await receive_snapshot(reg, TTID, stream)
        assert TTID not in reg.timelines
        assert reg.backend.discard_stages() == ()  # the staging is gone already
        nursery.cancel_scope.cancel()


async def test_the_donor_removes_nothing_it_streams_until_the_stream_ends() -> None:
    async with trio.open_nursery() as nursery:
        donor = await donor_with_wal(nursery, 4 * SEG)
        frames = snapshot_frames(donor)
        await frames.__anext__()  # the header: the hold is taken
        assert donor.removal_holds == 1
        assert await donor.remove_wal_before(Lsn(START + 2 * SEG)) == 0
        assert donor.store.start_lsn == START
        await frames.aclose()
        assert donor.removal_holds == 0
        assert await donor.remove_wal_before(Lsn(START + 2 * SEG)) == 2
        nursery.cancel_scope.cancel()


async def test_a_timeline_is_staged_by_one_pull_at_a_time() -> None:
    async with trio.open_nursery() as nursery:
        reg = await receiver(nursery)
        first = await reg.stage(TTID, SEG, START)
        with pytest.raises(PullInProgress):
            await reg.stage(TTID, SEG, START)
        await first.discard()
        second = await reg.stage(TTID, SEG, START)  # free again once the first is gone
        await second.discard()
        nursery.cancel_scope.cancel()
