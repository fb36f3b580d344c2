"""The per-timeline supervisor: event-driven waking, failover, back-off, admin controls."""

from __future__ import annotations

import itertools
import random

import trio
import trio.testing

from safekeeper_recovery.core import AppendRequest, Lsn, PeerInfo, TenantTimelineId
from safekeeper_recovery.recovery import DonorStatus, RecoveryConfig, RecoveryEngine
from safekeeper_recovery.testing import MiB, wait_until
from safekeeper_recovery.timeline import InProcessDonorConnector, LocalTarget

from .conftest import Cluster, wal_bytes


def engine_for(cluster: Cluster, connector: InProcessDonorConnector | None = None,
               **config: float) -> RecoveryEngine:
    conn = connector or InProcessDonorConnector(
        lambda node, ttid: cluster.timelines.get(int(node))
    )
    return RecoveryEngine(conn, RecoveryConfig(**config), rng=random.Random(1))  # type: ignore[arg-type]


async def test_supervisor_recovers_when_peer_info_arrives(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    end = await cluster.propose(1, [1, 2], 2 * MiB)
    engine = engine_for(cluster)
    tl = cluster[3]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.supervise, LocalTarget(tl))
        await trio.testing.wait_all_tasks_blocked()
        status = engine.statuses[tl.ttid]
        assert status.state == "idle"
        assert status.why_no_donor == "no alive peers"
        # Peer info is what wakes the supervisor: no polling needed.
        await cluster.exchange()
        await wait_until(lambda: status.last_outcome is not None, 60)
        assert status.last_outcome == "caught_up", status.last_error
        assert tl.snapshot().flush_lsn == end
        assert status.attempts == 1
        nursery.cancel_scope.cancel()
    assert await tl.digest(tl.snapshot().timeline_start_lsn, end) == await cluster[1].digest(
        tl.snapshot().timeline_start_lsn, end
    )


async def test_failover_to_the_next_donor_when_the_best_is_unreachable(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    end = await cluster.propose(1, [1, 2], MiB)
    # Node 1 ranks first (equal position, lower id) but is unreachable.
    reachable = {2}
    conn = InProcessDonorConnector(
        lambda node, ttid: cluster.timelines.get(int(node)) if int(node) in reachable else None
    )
    engine = engine_for(cluster, conn)
    tl = cluster[3]
    await cluster.exchange()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.supervise, LocalTarget(tl))
        await wait_until(lambda: tl.ttid in engine.statuses, 60)
        status = engine.statuses[tl.ttid]
        await wait_until(lambda: status.last_outcome == "caught_up", 60)
        assert tl.snapshot().flush_lsn == end
        assert status.attempts == 2, "first donor failed, the second was tried at once"
        assert status.last_outcome == "caught_up"
        assert status.donor == 2
        nursery.cancel_scope.cancel()


async def test_failed_attempts_back_off_exponentially_with_jitter(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2], MiB)
    conn = InProcessDonorConnector(lambda node, ttid: None)  # every donor unreachable
    engine = engine_for(cluster, conn, backoff_initial=0.5, backoff_max=30.0)
    tl = cluster[3]
    starts: list[float] = []

    class Recording(InProcessDonorConnector):
        async def fetch_status(self, donor: PeerInfo, ttid: TenantTimelineId) -> DonorStatus:
            starts.append(trio.current_time())
            return await super().fetch_status(donor, ttid)

    engine.connector = Recording(lambda node, ttid: None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.supervise, LocalTarget(tl))
        # Keep the peers alive so donors stay eligible.
        for _ in range(60):
            await cluster.exchange()
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    # Each round tries both donors back to back, then waits.
    rounds = [t for i, t in enumerate(starts) if i % 2 == 0]
    gaps = [b - a for a, b in itertools.pairwise(rounds)]
    assert len(gaps) >= 4
    for i, gap in enumerate(gaps[:5]):
        nominal = min(30.0, 0.5 * 2**i)
        assert 0.5 * nominal <= gap <= nominal + 1e-6, (i, gap, gaps)


async def test_trigger_skips_the_backoff(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2], MiB)
    engine = engine_for(cluster, InProcessDonorConnector(lambda node, ttid: None),
                        backoff_initial=1000.0, backoff_max=1000.0)
    tl = cluster[3]
    await cluster.exchange()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.supervise, LocalTarget(tl))
        await trio.testing.wait_all_tasks_blocked()
        status = engine.statuses[tl.ttid]
        assert status.state == "backoff"
        before = status.attempts
        start = trio.current_time()
        engine.trigger(tl.ttid)
        await trio.testing.wait_all_tasks_blocked()
        assert status.attempts > before
        assert trio.current_time() - start < 1.0, "trigger must not wait out the back-off"
        nursery.cancel_scope.cancel()


async def test_no_donor_when_our_term_is_above_every_peer(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2], MiB)
    await cluster[3].bump_term(5)
    await cluster.exchange()
    engine = engine_for(cluster)
    tl = cluster[3]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.supervise, LocalTarget(tl))
        await trio.testing.wait_all_tasks_blocked()
        status = engine.statuses[tl.ttid]
        assert status.attempts == 0
        assert status.why_no_donor is not None
        assert "term 1 < our term 5" in status.why_no_donor
        nursery.cancel_scope.cancel()


async def test_no_donor_when_no_peer_is_ahead(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2, 3], MiB)
    await cluster.exchange()
    engine = engine_for(cluster)
    tl = cluster[3]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.supervise, LocalTarget(tl))
        await trio.testing.wait_all_tasks_blocked()
        status = engine.statuses[tl.ttid]
        assert status.attempts == 0
        assert status.why_no_donor is not None
        assert "not ahead" in status.why_no_donor
        nursery.cancel_scope.cancel()


def test_every_attempt_outcome_is_a_predeclared_metric_label() -> None:
    from safekeeper_recovery.core import RecoveryError
    from safekeeper_recovery.transport import RECOVERY_OUTCOMES

    def subclasses(cls: type[RecoveryError]) -> set[type[RecoveryError]]:
        found = set(cls.__subclasses__())
        for sub in list(found):
            found |= subclasses(sub)
        return found

    outcomes = {"caught_up", "cancelled", RecoveryError.outcome}
    outcomes |= {c.outcome for c in subclasses(RecoveryError)}
    assert outcomes <= set(RECOVERY_OUTCOMES)


async def test_an_operator_cancel_ends_the_running_attempt(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2], MiB)
    await cluster.exchange()

    class Hanging(InProcessDonorConnector):
        async def fetch_status(self, donor: PeerInfo, ttid: TenantTimelineId) -> DonorStatus:
            await trio.sleep_forever()
            raise AssertionError("unreachable")

    engine = engine_for(cluster, Hanging(lambda node, ttid: None), http_timeout=1e6)
    tl = cluster[3]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.supervise, LocalTarget(tl))
        await wait_until(lambda: tl.ttid in engine.statuses, 60)
        status = engine.statuses[tl.ttid]
        await wait_until(lambda: status.state == "recovering", 60)
        engine.cancel(tl.ttid)
        await wait_until(lambda: status.last_outcome is not None, 60)
        assert status.last_outcome == "cancelled"
        assert status.state == "backoff"
        nursery.cancel_scope.cancel()


async def append(cluster: Cluster, nodes: list[int], term: int, start: Lsn, n: int) -> Lsn:
    """The elected leader of ``term`` writes ``n`` more bytes at ``start`` to ``nodes``."""
    for node in nodes:
        await cluster[node].process(
            AppendRequest(term, start, Lsn(0), Lsn(0), wal_bytes(0, start, n)))
    return start + n


async def test_back_off_ends_early_only_when_the_donors_on_offer_change(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    end = await cluster.propose(1, [1, 2], MiB)
    reachable: set[int] = set()
    conn = InProcessDonorConnector(
        lambda node, ttid: cluster.timelines.get(int(node)) if int(node) in reachable else None
    )
    engine = engine_for(cluster, conn, backoff_initial=1000.0, backoff_max=1000.0)
    tl = cluster[3]
    await cluster.exchange()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.supervise, LocalTarget(tl))
        await trio.testing.wait_all_tasks_blocked()
        status = engine.statuses[tl.ttid]
        assert status.state == "backoff"
        assert status.attempts == 2, "both donors failed"
        assert status.backoff_until is not None
        backoff_until = status.backoff_until
        # More of the same news (the failed donors' flush moves on in the same term):
        # looked at, but no reason to retry before the back-off is over.
        changes = engine.evaluations.get("change", 0)
        await append(cluster, [1, 2], 1, end, 64 * 1024)
        await cluster.exchange()
        await trio.testing.wait_all_tasks_blocked()
        assert engine.evaluations.get("change", 0) > changes
        assert status.state == "backoff"
        assert status.attempts == 2
        # A new term on the donors (a new leader): the reason may be gone, retry now.
        reachable.update({1, 2})
        end = await cluster.propose(2, [1, 2], MiB)
        await cluster.exchange()
        await wait_until(lambda: status.last_outcome == "caught_up", 60)
        assert trio.current_time() < backoff_until
        assert tl.snapshot().flush_lsn == end
        nursery.cancel_scope.cancel()


async def test_evaluations_are_counted_by_what_woke_the_supervisor(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    await cluster.propose(1, [1, 2, 3], MiB)
    engine = engine_for(cluster, fallback_tick=100.0)
    tl = cluster[3]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.supervise, LocalTarget(tl))
        await trio.testing.wait_all_tasks_blocked()
        assert engine.evaluations == {"start": 1}
        await cluster.exchange()  # news (new peers), not ahead: no attempt
        await trio.testing.wait_all_tasks_blocked()
        # One wake per change the exchange made (peers, then maybe a commit_lsn learnt).
        assert set(engine.evaluations) == {"start", "change"}, engine.evaluations
        assert engine.evaluations["start"] == 1
        await trio.sleep(151.0)  # past the longest jittered tick, in virtual time
        assert engine.evaluations["tick"] >= 1
        engine.trigger(tl.ttid)
        await trio.testing.wait_all_tasks_blocked()
        assert engine.evaluations["trigger"] == 1
        assert engine.statuses[tl.ttid].evaluations == sum(engine.evaluations.values())
        assert engine.statuses[tl.ttid].attempts == 0
        nursery.cancel_scope.cancel()
