"""A disk fault in a timeline's write path: the timeline stops with a clear reason, never
acknowledges what failed, reports only durable state, the others go on, a restart recovers;
a shortage (full disk, quota, no free descriptor) heals by itself once it is over."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from safekeeper_recovery.core import (
    AcceptorMessage,
    AppendRequest,
    AppendResponse,
    Lsn,
    NodeId,
    ProposerElected,
    ProposerMessage,
    TermHistory,
    TermLsn,
    VoteRequest,
    VoteResponse,
)
from safekeeper_recovery.storage import DiskFaults
from safekeeper_recovery.testing import make_ttid
from safekeeper_recovery.timeline import (
    FileBackend,
    Timeline,
    TimelineBroken,
    TimelineParams,
    TimelineRegistry,
    run_wal_acceptor,
)

START = Lsn(0x100_0000)
SEG = 1 << 20




def tl_dir(data_dir: Path, n: int) -> Path:
    return data_dir / str(make_ttid(n).tenant_id) / str(make_ttid(n).timeline_id)


async def elect(tl: Timeline, term: int) -> Lsn:
    vote = await tl.process(VoteRequest(term))
    assert isinstance(vote, VoteResponse)
    assert vote.vote_given
    history = TermHistory([*vote.term_history, TermLsn(term, vote.flush_lsn)])
    await tl.process(ProposerElected(term, vote.flush_lsn, history))
    return vote.flush_lsn


async def append_mib(tl: Timeline, begin: Lsn) -> None:
    """1 MiB in 128 KiB appends (each flushed): crosses a segment end."""
    chunk = b"b" * (128 << 10)
    for i in range(8):
        await tl.process(AppendRequest(1, begin + i * len(chunk), Lsn(0), Lsn(0), chunk))


@asynccontextmanager
async def running(data_dir: Path) -> AsyncIterator[TimelineRegistry]:
    """A registry over ``data_dir``; on exit it stops and closes its stores (a restart)."""
    async with trio.open_nursery() as nursery:
        reg = TimelineRegistry(NodeId(1), FileBackend(data_dir))
        await nursery.start(reg.serve)
        try:
            yield reg
        finally:
            for tl in reg.timelines.values():
                await tl.store.aclose()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("op", "error", "kind"),
    [
        ("write", errno.ENOSPC, "disk full"),
        ("fdatasync", errno.EIO, "I/O error"),
        ("fallocate", errno.ENOSPC, "disk full"),
    ],
)
async def test_a_wal_write_fault_stops_only_that_timeline_and_a_restart_recovers(
    tmp_path: Path, op: str, error: int, kind: str
) -> None:
    async with running(tmp_path) as reg:
        tl1, _ = await reg.create(make_ttid(1), TimelineParams(START, SEG))
        tl2, _ = await reg.create(make_ttid(2), TimelineParams(START, SEG))
        for tl in (tl1, tl2):
            await elect(tl, 1)
            await tl.process(AppendRequest(1, START, Lsn(0), Lsn(0), b"a" * 5000))
        acked = START + 5000
        with DiskFaults() as faults:
            faults.fail(op, error, times=None, under=tl_dir(tmp_path, 1))
            if error == errno.ENOSPC:  # a full disk: no room to heal into either
                faults.fail("fallocate", error, times=None, under=tl_dir(tmp_path, 1))
            with pytest.raises(TimelineBroken, match=f"stopped: {kind}: ") as info:
                await append_mib(tl1, acked)
            assert info.value.reason.startswith(f"{kind}: ")
            assert tl1.broken is not None
            assert tl1.broken.startswith(f"{kind}: ")
            with pytest.raises(TimelineBroken, match=f"is stopped: {kind}"):
                await tl1.process(VoteRequest(5))
            snap = tl1.snapshot()
            assert snap.broken == tl1.broken
            assert snap.term == 1
            assert acked <= snap.flush_lsn == snap.write_lsn == tl1.store.flush_lsn
            durable = snap.flush_lsn
            # durable WAL can still be read (a peer may recover from it)
            assert await tl1.read_wal(START, 100) == b"a" * 100
            # the other timeline, on the same disk but outside the fault, keeps going
            reply = await tl2.process(AppendRequest(1, acked, Lsn(0), Lsn(0), b"c" * 5000))
            assert isinstance(reply, AppendResponse)
            assert reply.flush_lsn == acked + 5000
    async with running(tmp_path) as reg:
        assert reg.broken == {}
        tl1 = reg.get(make_ttid(1))
        snap = tl1.snapshot()
        assert snap.broken is None
        assert snap.flush_lsn == durable
        assert await tl1.read_wal(START, 5000) == b"a" * 5000
        start = await elect(tl1, 2)
        assert start == durable
        reply = await tl1.process(AppendRequest(2, start, Lsn(0), Lsn(0), b"d" * 1000))
        assert isinstance(reply, AppendResponse)
        assert reply.flush_lsn == durable + 1000
        assert reg.get(make_ttid(2)).snapshot().flush_lsn == acked + 5000


@pytest.mark.parametrize(
    ("ops", "error", "kind"),
    [
        (("write", "fallocate"), errno.ENOSPC, "disk full"),
        (("fallocate",), errno.EDQUOT, "disk quota exceeded"),
        (("open",), errno.EMFILE, "too many open files"),
    ],
)
async def test_a_timeline_stopped_by_a_shortage_takes_writes_again_once_it_is_over(
    tmp_path: Path, ops: tuple[str, ...], error: int, kind: str
) -> None:
    async with running(tmp_path) as reg:
        tl, _ = await reg.create(make_ttid(1), TimelineParams(START, SEG))
        await elect(tl, 1)
        await tl.process(AppendRequest(1, START, Lsn(0), Lsn(0), b"a" * 5000))
        with DiskFaults() as faults:
            for op in ops:
                faults.fail(op, error, times=None, under=tl_dir(tmp_path, 1))
            with pytest.raises(TimelineBroken, match=f"stopped: {kind}: "):
                await append_mib(tl, START + 5000)  # needs a new segment
            durable = tl.snapshot().flush_lsn
            with trio.move_on_after(1.5):  # a check while short: it stays stopped
                await tl.changed.wait_for(lambda: tl.broken is None)
            assert tl.broken is not None
            assert tl.broken.startswith(f"{kind}: ")
            faults.clear()
            with trio.fail_after(10):
                await tl.changed.wait_for(lambda: tl.broken is None)
        assert not (tl_dir(tmp_path, 1) / "waltmp").exists()
        snap = tl.snapshot()
        assert (snap.flush_lsn, snap.term) == (durable, 1)  # reloaded: what is durable
        start = await elect(tl, 2)
        reply = await tl.process(AppendRequest(2, start, Lsn(0), Lsn(0), b"e" * SEG))
        assert isinstance(reply, AppendResponse)
        assert reply.flush_lsn == start + SEG


async def test_an_io_error_is_not_retried_it_waits_for_an_operator(tmp_path: Path) -> None:
    async with running(tmp_path) as reg:
        tl, _ = await reg.create(make_ttid(1), TimelineParams(START, SEG))
        await elect(tl, 1)
        with DiskFaults() as faults:
            faults.fail("fdatasync", errno.EIO, times=1, under=tl_dir(tmp_path, 1))
            with pytest.raises(TimelineBroken, match="I/O error"):
                await tl.process(AppendRequest(1, START, Lsn(0), Lsn(0), b"a" * 5000))
        assert not tl.revivable
        with trio.move_on_after(1.5):  # past the first retry of a shortage
            await tl.changed.wait_for(lambda: tl.broken is None)
        assert tl.broken is not None
        assert tl.broken.startswith("I/O error")


@pytest.mark.parametrize("op", ["write", "fsync", "rename"])
async def test_a_failed_vote_persist_is_never_answered_and_the_old_term_stays(
    tmp_path: Path, op: str
) -> None:
    async with running(tmp_path) as reg:
        tl, _ = await reg.create(make_ttid(1), TimelineParams(START, SEG))
        await elect(tl, 3)
        with DiskFaults() as faults:
            faults.fail(op, errno.ENOSPC, times=None, under=tl_dir(tmp_path, 1))
            faults.fail("fallocate", errno.ENOSPC, times=None, under=tl_dir(tmp_path, 1))
            with pytest.raises(TimelineBroken, match="disk full: cannot persist control file"):
                await tl.process(VoteRequest(7))
        assert tl.acceptor.term == 7  # the acceptor counted it as done ...
        assert tl.snapshot().term == 3  # ... but only the durable term is reported
    async with running(tmp_path) as reg:
        tl = reg.get(make_ttid(1))
        # fsync fails after the rename: the new term may have reached the disk, unanswered
        assert tl.snapshot().term in ((3, 7) if op == "fsync" else (3,))
        await elect(tl, 8)


async def test_batched_appends_that_fail_to_flush_are_never_acknowledged(
    tmp_path: Path,
) -> None:
    """The WalAcceptor path: no-flush appends, then a flush that hits EIO. The reply stream
    holds no AppendResponse past what is durable, and the acceptor ends with the error."""
    async with running(tmp_path) as reg:
        tl, _ = await reg.create(make_ttid(1), TimelineParams(START, SEG))
        await elect(tl, 1)
        first = await tl.process(AppendRequest(1, START, Lsn(0), Lsn(0), b"a" * 1000))
        assert isinstance(first, AppendResponse)
        msg_send, msg_recv = trio.open_memory_channel[ProposerMessage](16)
        reply_send, reply_recv = trio.open_memory_channel[AcceptorMessage](16)
        with DiskFaults() as faults:
            faults.fail("fdatasync", errno.EIO, times=None, under=tl_dir(tmp_path, 1))
            async with msg_send:
                for i in range(4):
                    begin = START + 1000 + i * 1000
                    await msg_send.send(AppendRequest(1, begin, Lsn(0), Lsn(0), b"b" * 1000))
            async with tl.receiver("proposer", "test") as receiver:
                with trio.fail_after(10), pytest.raises(TimelineBroken, match="I/O error"):
                    await run_wal_acceptor(tl, receiver, msg_recv, reply_send)
        replies = [r async for r in reply_recv]
        assert all(isinstance(r, AppendResponse) for r in replies)
        assert all(r.flush_lsn <= START + 1000 for r in replies if isinstance(r, AppendResponse))
        assert tl.snapshot().flush_lsn == START + 1000
