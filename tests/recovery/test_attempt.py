"""One recovery attempt, in process: every way an attempt ends, and that each end tears down
all three siblings (network_io, WAL acceptor, reply reader)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from safekeeper_recovery.core import (
    DonorUnavailable,
    NoCommonPoint,
    PeerInfo,
    ProposerArrived,
    TermChanged,
)
from safekeeper_recovery.recovery import (
    AttemptResult,
    DonorStatus,
    DonorTimeout,
    RecoveryConfig,
    RecoveryStatus,
    run_attempt,
)
from safekeeper_recovery.testing import MiB
from safekeeper_recovery.timeline import InProcessDonorConnector, LocalTarget, Timeline

from .conftest import START, Cluster


def connector(cluster: Cluster, **kw: float) -> InProcessDonorConnector:
    return InProcessDonorConnector(lambda node, ttid: cluster.timelines.get(int(node)), **kw)


async def attempt(
    cluster: Cluster, node: int, donor: int, conn: InProcessDonorConnector | None = None,
    *, count_tasks: bool = True, no_data_timeout: float = 30.0, caught_up_grace: float = 0.1,
    contended: bool = False,
) -> AttemptResult:
    """Run one attempt and check that it leaves no task behind and unregisters itself."""
    tl = cluster[node]
    before = trio.lowlevel.current_statistics().tasks_living
    result = await run_attempt(
        LocalTarget(tl), cluster.peer_info(donor), conn or connector(cluster),
        RecoveryConfig(no_data_timeout=no_data_timeout, caught_up_grace=caught_up_grace),
        RecoveryStatus(), contended=lambda: contended,
    )
    if count_tasks:
        # Structured concurrency: the attempt's nursery is gone, so are its three siblings.
        assert trio.lowlevel.current_statistics().tasks_living == before
    assert not tl.receivers, "the recovery receiver must be unregistered"
    return result


async def digest(tl: Timeline) -> str:
    return await tl.digest(START, tl.snapshot().flush_lsn)


async def test_lagging_node_catches_up_and_equals_the_donor(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    end = await cluster.propose(1, [1, 2], 3 * MiB)
    await cluster.exchange()
    result = await attempt(cluster, 3, 1)
    assert result.error is None, result.message
    assert result.outcome == "caught_up"
    assert result.end_lsn == end
    assert result.bytes == 3 * MiB
    snap = cluster[3].snapshot()
    assert (snap.term, snap.last_log_term, snap.flush_lsn) == (1, 1, end)
    assert await digest(cluster[3]) == await digest(cluster[1])


async def test_divergent_tail_is_truncated_and_replaced(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2, 3], 1 * MiB)
    # Term 2 reaches only node 3 (a losing, uncommitted tail)…
    await cluster.propose(2, [3], 512 * 1024, seed=2)
    # …then term 3 wins on nodes 1 and 2 and writes different WAL.
    end = await cluster.propose(3, [1, 2], 2 * MiB, seed=3)
    await cluster.exchange()
    result = await attempt(cluster, 3, 1)
    assert result.error is None, result.message
    assert result.start_lsn == START + MiB, "the common point is the end of term 1"
    assert cluster[3].snapshot().flush_lsn == end
    assert await digest(cluster[3]) == await digest(cluster[1])
    assert [e.term for e in cluster[3].snapshot().term_history] == [0, 1, 3]


async def test_donor_term_bump_before_the_attempt_is_term_changed(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2], MiB)
    donor = cluster.peer_info(1)
    await cluster[1].bump_term(5)
    result = await run_attempt(LocalTarget(cluster[3]), donor, connector(cluster),
                               RecoveryConfig(), RecoveryStatus())
    assert isinstance(result.error, TermChanged)
    assert "donor term changed from 1 to 5" in result.message


async def test_donor_term_bump_mid_stream_ends_term_changed(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2], MiB)

    class BumpingConnector(InProcessDonorConnector):
        async def fetch_status(self, donor: PeerInfo, ttid: object) -> DonorStatus:
            status = await super().fetch_status(donor, ttid)  # type: ignore[arg-type]
            # The donor's term moves right after it told us its status.
            await cluster[1].bump_term(7)
            return status

    conn = BumpingConnector(lambda node, ttid: cluster.timelines.get(int(node)))
    result = await attempt(cluster, 3, 1, conn)
    assert isinstance(result.error, TermChanged), result
    assert "term" in result.message


async def test_our_term_moving_mid_stream_ends_term_changed(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2], 8 * MiB)
    await cluster.exchange()

    async def voter() -> None:
        # A proposer of a higher term votes node 3 up once recovery is under way.
        await cluster[3].changed.wait_for(lambda: cluster[3].snapshot().flush_lsn > START + MiB)
        await cluster[3].bump_term(9)

    before = trio.lowlevel.current_statistics().tasks_living
    async with trio.open_nursery() as nursery:
        nursery.start_soon(voter)
        result = await attempt(cluster, 3, 1, count_tasks=False)
    assert trio.lowlevel.current_statistics().tasks_living == before
    assert isinstance(result.error, TermChanged), result


async def test_proposer_streaming_to_us_ends_the_attempt_within_one_batch(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    # A backlog well beyond the attempt's queue (8 messages of up to 1 MiB).
    await cluster.propose(1, [1, 2], 32 * MiB)
    target = cluster[3]

    async def proposer_arrives() -> None:
        await target.changed.wait_for(lambda: target.snapshot().flush_lsn > START + MiB)
        async with target.receiver("proposer", "test") as r:
            target.mark(r, "streaming", target.acceptor.term)
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(proposer_arrives)
        result = await run_attempt(LocalTarget(target), cluster.peer_info(1),
                                   connector(cluster), RecoveryConfig(), RecoveryStatus())
        nursery.cancel_scope.cancel()
    assert isinstance(result.error, ProposerArrived), result
    assert result.end_lsn < START + 32 * MiB


async def test_no_common_point_is_reported(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2], MiB)

    class StrangerConnector(InProcessDonorConnector):
        async def fetch_status(self, donor: PeerInfo, ttid: object) -> DonorStatus:
            from safekeeper_recovery.core import TermHistory

            return DonorStatus(1, TermHistory.of((1, 0x200_0000)))

    conn = StrangerConnector(lambda node, ttid: cluster.timelines.get(int(node)))
    result = await attempt(cluster, 3, 1, conn)
    assert isinstance(result.error, NoCommonPoint), result


async def test_silent_donor_hits_the_no_data_timeout(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2], MiB)
    # Keepalives every hour and no early end at the donor's end: the 30 s no-data timeout
    # fires first.
    conn = connector(cluster, keepalive_interval=3600.0)
    result = await attempt(cluster, 3, 1, conn, no_data_timeout=30.0, caught_up_grace=3600.0)
    # The donor streams its 1 MiB, then goes silent: timeout, not success.
    assert isinstance(result.error, DonorTimeout), result
    assert result.end_lsn == START + MiB


async def test_an_attempt_at_the_donors_end_ends_after_the_grace_not_the_keepalive(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    end = await cluster.propose(1, [1, 2], 3 * MiB)
    await cluster.exchange()
    # Keepalives every hour: only the grace after the donor's last chunk can end it.
    conn = connector(cluster, keepalive_interval=3600.0)
    t0 = trio.current_time()
    result = await attempt(cluster, 3, 1, conn, caught_up_grace=0.25)
    assert result.outcome == "caught_up", result.message
    assert result.end_lsn == end
    assert "nothing more within 0.25s" in result.message
    # The mock clock only moves when everything waits: the grace is all the waiting.
    assert trio.current_time() - t0 < 1.0
    assert cluster[3].snapshot().flush_lsn == end  # flushed before the attempt ended
    assert await digest(cluster[3]) == await digest(cluster[1])


async def test_a_caught_up_attempt_ends_at_once_while_others_wait_for_a_slot(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    end = await cluster.propose(1, [1, 2], 3 * MiB)
    await cluster.exchange()
    conn = connector(cluster, keepalive_interval=3600.0)
    t0 = trio.current_time()
    # A grace of an hour: only `contended` can end the attempt before the no-data timeout.
    result = await attempt(cluster, 3, 1, conn, caught_up_grace=3600.0,
                           no_data_timeout=7200.0, contended=True)
    assert result.outcome == "caught_up", result.message
    assert "others wait for the slot" in result.message
    assert result.end_lsn == end
    # The mock clock only moves when everything waits: nothing waited on a timer.
    assert trio.current_time() - t0 < 0.01
    assert cluster[3].snapshot().flush_lsn == end  # flushed before the attempt ended
    assert await digest(cluster[3]) == await digest(cluster[1])


async def test_an_uncontended_attempt_still_waits_out_the_grace(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2], 3 * MiB)
    await cluster.exchange()
    conn = connector(cluster, keepalive_interval=3600.0)
    t0 = trio.current_time()
    result = await attempt(cluster, 3, 1, conn, caught_up_grace=0.5, contended=False)
    assert "nothing more within 0.5s" in result.message
    assert trio.current_time() - t0 >= 0.5


async def test_unreachable_donor_is_donor_unavailable(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2], MiB)
    conn = InProcessDonorConnector(lambda node, ttid: None)
    result = await attempt(cluster, 3, 1, conn)
    assert isinstance(result.error, DonorUnavailable), result


async def test_deleting_the_timeline_cancels_the_attempt_and_its_siblings(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2], 8 * MiB)
    tl = cluster[3]
    before = trio.lowlevel.current_statistics().tasks_living
    outcome: list[AttemptResult] = []

    async def recover() -> None:
        async with tl.attach():
            outcome.append(await run_attempt(LocalTarget(tl), cluster.peer_info(1),
                                             connector(cluster), RecoveryConfig(),
                                             RecoveryStatus()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(recover)
        await tl.changed.wait_for(lambda: tl.snapshot().flush_lsn > START + MiB)
        tl.mark_deleted()
    assert outcome == [], "a cancelled attempt returns no outcome"
    # The attempt's tasks are gone, and so is the registry's task serving the deleted
    # timeline (deleting a timeline cancels everything attached to it).
    assert trio.lowlevel.current_statistics().tasks_living == before - 1
    assert not tl.receivers


async def test_a_vote_while_the_donor_is_silent_ends_the_attempt_at_once(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2], MiB)
    # The donor streams its 1 MiB, then says nothing for an hour (no keepalives), and the
    # attempt does not end early at the donor's end.
    conn = connector(cluster, keepalive_interval=3600.0)
    tl = cluster[3]

    async def voter() -> None:
        await tl.changed.wait_for(lambda: tl.snapshot().flush_lsn == START + MiB)
        await trio.sleep(1.0)
        await tl.bump_term(9)  # a proposer's VoteRequest, as far as recovery can tell

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(voter)
        result = await run_attempt(
            LocalTarget(tl), cluster.peer_info(1), conn,
            RecoveryConfig(no_data_timeout=30.0, caught_up_grace=3600.0), RecoveryStatus())
    assert isinstance(result.error, TermChanged), result
    assert trio.current_time() - start < 5.0, "noticed from local state, not by a timeout"


async def test_a_greeted_proposer_keeps_the_attempt_from_voting(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    """A proposer that has only greeted the node (mid-election) already keeps recovery off
    it: the attempt's local vote is refused under the timeline lock, nothing changes."""
    await cluster.propose(1, [1, 2], MiB)
    target = cluster[3]
    before = (target.acceptor.term, target.snapshot().flush_lsn)
    async with target.receiver("proposer", "test") as r:
        target.mark(r, "greeted")
        result = await run_attempt(LocalTarget(target), cluster.peer_info(1),
                                   connector(cluster), RecoveryConfig(), RecoveryStatus())
    assert isinstance(result.error, ProposerArrived), result
    assert (target.acceptor.term, target.snapshot().flush_lsn) == before
    assert target.recovery_yields == 1


async def test_a_proposer_greeting_mid_attempt_ends_it_before_its_next_message(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2], 32 * MiB)
    target = cluster[3]

    async def proposer_greets() -> None:
        await target.changed.wait_for(lambda: target.snapshot().flush_lsn > START + MiB)
        async with target.receiver("proposer", "test") as r:
            target.mark(r, "greeted")
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(proposer_greets)
        result = await run_attempt(LocalTarget(target), cluster.peer_info(1),
                                   connector(cluster), RecoveryConfig(), RecoveryStatus())
        nursery.cancel_scope.cancel()
    assert isinstance(result.error, ProposerArrived), result
    assert result.end_lsn < START + 32 * MiB


class _HandshakeHangs:
    """A donor connector whose WAL stream never gets past the handshake (a donor frozen
    right after it accepted the connection)."""

    def __init__(self, inner: InProcessDonorConnector) -> None:
        self.inner = inner
        self.connecting = trio.Event()

    async def fetch_status(self, donor: PeerInfo, ttid: object) -> DonorStatus:
        return await self.inner.fetch_status(donor, ttid)  # type: ignore[arg-type]

    @asynccontextmanager
    async def open_stream(self, *args: object) -> AsyncIterator[object]:
        self.connecting.set()
        await trio.sleep_forever()
        yield None  # type: ignore[unreachable]  # never reached: the handshake hangs


async def test_a_proposer_greeting_while_the_donor_handshake_hangs_ends_the_attempt(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2], MiB)
    target = cluster[3]
    hangs = _HandshakeHangs(connector(cluster))

    async def proposer_greets() -> None:
        await hangs.connecting.wait()
        async with target.receiver("proposer", "test") as r:
            target.mark(r, "greeted")
            await trio.sleep_forever()

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(proposer_greets)
        with trio.fail_after(10):  # the hung handshake has no timeout of its own here
            result = await run_attempt(LocalTarget(target), cluster.peer_info(1),
                                       hangs,  # type: ignore[arg-type]
                                       RecoveryConfig(), RecoveryStatus())
        nursery.cancel_scope.cancel()
    assert isinstance(result.error, ProposerArrived), result
    assert trio.current_time() - start < 1.0, "ended by the greeting, not by a timeout"
