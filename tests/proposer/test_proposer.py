"""The proposer driver against in-process fake safekeepers built on the real Acceptor."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from safekeeper_recovery.core import (
    MAX_SEND_SIZE,
    AppendRequest,
    Lsn,
    ProposerElected,
    TermHistory,
    VoteRequest,
)
from safekeeper_recovery.proposer import (
    LostQuorumError,
    NewerTermError,
    Proposer,
    ProposerConfig,
    ProposeResult,
    WalGenerator,
    propose,
)
from safekeeper_recovery.testing import MiB

from ._fakes import START, TENANT, TIMELINE, FakeCluster


def config(cluster: FakeCluster, nbytes: int, seed: int = 1, **kw: Any) -> ProposerConfig:
    fast: dict[str, Any] = {
        "reconnect_min": 0.01,
        "reconnect_max": 0.05,
        "keepalive_interval": 0.05,
        "lost_quorum_timeout": 0.3,
        "drain_timeout": 2.0,
        "response_timeout": 5.0,
        "close_timeout": 0.5,
    }
    fast.update(kw)
    return ProposerConfig(cluster.urls, TENANT, TIMELINE, nbytes, seed=seed, **fast)


def gen(seed: int, nbytes: int) -> bytes:
    return WalGenerator(seed, nbytes).read(0, nbytes)


@pytest.mark.parametrize("batch", [False, True], ids=["reply-each", "reply-batched"])
async def test_three_nodes_hold_identical_wal_and_commit_is_a_quorum_flush(batch: bool) -> None:
    cluster = FakeCluster(3, batch=batch)
    with trio.fail_after(20):
        result = await propose(config(cluster, 4 * MiB), cluster.connector("A"))
    assert result.term == 1
    assert result.start_lsn == START
    assert result.end_lsn == START + 4 * MiB
    assert result.commit_lsn == result.end_lsn
    flushes = sorted((f for f in result.flush_lsns.values() if f is not None), reverse=True)
    assert result.commit_lsn == flushes[1]  # the quorum-th highest flush
    for node in cluster.nodes.values():
        assert node.durable_wal() == gen(1, 4 * MiB)
        assert node.acceptor.commit_lsn == result.end_lsn
        assert node.acceptor.term_history == TermHistory.of((0, START), (1, START))
    assert "term 1" in result.summary()


async def test_zero_bytes_still_elects_and_commits_the_term_start() -> None:
    cluster = FakeCluster(3)
    with trio.fail_after(10):
        result = await propose(config(cluster, 0), cluster.connector("A"))
    assert result.commit_lsn == result.end_lsn == START


async def test_one_node_down_from_the_start_finishes_on_the_quorum() -> None:
    cluster = FakeCluster(3)
    cluster[2].kill()
    with trio.fail_after(20):
        result = await propose(config(cluster, 2 * MiB, drain_timeout=0.1), cluster.connector("A"))
    assert result.commit_lsn == START + 2 * MiB
    assert result.flush_lsns[cluster.urls[2]] is None
    assert result.summary().endswith(f"{cluster.urls[2]}=down")
    assert cluster[0].durable_wal() == cluster[1].durable_wal() == gen(1, 2 * MiB)
    assert cluster[2].durable_wal() == b""


async def test_a_node_never_reached_is_not_waited_for_at_the_end() -> None:
    cluster = FakeCluster(3)
    cluster[2].kill()
    with trio.fail_after(5):  # drain_timeout is far longer: it must not be spent on node 3
        result = await propose(config(cluster, MiB, drain_timeout=60.0), cluster.connector("A"))
    assert result.commit_lsn == START + MiB
    assert result.flush_lsns[cluster.urls[2]] is None


async def test_an_election_goes_on_without_a_black_holed_node(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Rule P6 (fault-campaign finding F2): a connect to node 3 hangs for ever; nodes 1
    and 2 are a quorum, so the run elects after ``election_grace`` and finishes."""
    cluster = FakeCluster(3)
    cluster.connect_delays[("A", cluster.urls[2])] = math.inf
    began = trio.current_time()
    with trio.fail_after(60):
        result = await propose(config(cluster, MiB, election_grace=0.5), cluster.connector("A"))
    assert trio.current_time() - began < 2.0
    assert result.commit_lsn == START + MiB
    assert result.flush_lsns[cluster.urls[2]] is None
    assert cluster[0].durable_wal() == cluster[1].durable_wal() == gen(1, MiB)


async def test_a_node_that_answers_within_the_grace_takes_part_in_the_election(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Node 3 is in term 5 and greets 0.3 s after the others, within the 0.5 s grace: the
    term is chosen with its greeting (6), so it votes rather than stopping the run with a
    newer term, as it would if it greeted after the term was chosen."""
    cluster = FakeCluster(3)
    cluster[2].handle(VoteRequest(5))
    cluster.connect_delays[("A", cluster.urls[2])] = 0.3
    with trio.fail_after(60):
        result = await propose(config(cluster, MiB, election_grace=0.5), cluster.connector("A"))
    assert result.term == 6
    assert cluster[2].durable_wal() == gen(1, MiB)

    late = FakeCluster(3)
    late[2].handle(VoteRequest(5))
    late.connect_delays[("A", late.urls[2])] = 0.8
    with trio.fail_after(60), pytest.raises(NewerTermError):
        await propose(config(late, MiB, election_grace=0.5), late.connector("A"))


async def test_one_node_killed_mid_propose_the_proposer_finishes_on_the_quorum() -> None:
    cluster = FakeCluster(3)
    cluster.stall("A", 2, START + MiB)  # hold node 3 at 1 MiB so the kill lands mid-run
    async with trio.open_nursery() as nursery:
        outcome: list[ProposeResult] = []

        async def run() -> None:
            # Node 3 joined the stream, so the end waits drain_timeout for it to come back.
            cfg = config(cluster, 4 * MiB, drain_timeout=0.1)
            outcome.append(await propose(cfg, cluster.connector("A")))

        nursery.start_soon(run)
        await cluster.wait_until(lambda: cluster[2].flush_lsn == START + MiB)
        cluster[2].kill()
    assert outcome[0].commit_lsn == START + 4 * MiB
    assert cluster[0].durable_wal() == cluster[1].durable_wal() == gen(1, 4 * MiB)
    assert cluster[2].durable_wal() == gen(1, MiB)


async def test_a_restarted_node_reconnects_and_catches_up_in_the_same_term() -> None:
    cluster = FakeCluster(3)
    cluster.stall("A", 2, START + MiB)
    async with trio.open_nursery() as nursery:
        outcome: list[ProposeResult] = []

        async def run() -> None:
            cfg = config(cluster, 3 * MiB, drain_timeout=10.0)  # a bound, not a wait
            outcome.append(await propose(cfg, cluster.connector("A")))

        nursery.start_soon(run)
        await cluster.wait_until(lambda: cluster[2].flush_lsn == START + MiB)
        cluster[2].kill()
        del cluster.stalls[("A", cluster.urls[2])]
        cluster[2].restart()
    assert outcome[0].commit_lsn == START + 3 * MiB
    # The quorum finishes while node 3 is still reconnecting: the drain must wait for it.
    assert outcome[0].flush_lsns[cluster.urls[2]] == START + 3 * MiB
    for node in cluster.nodes.values():
        assert node.durable_wal() == gen(1, 3 * MiB)


async def test_two_nodes_down_from_the_start_is_a_clear_quorum_error() -> None:
    cluster = FakeCluster(3)
    cluster[1].kill()
    cluster[2].kill()
    with trio.fail_after(10), pytest.raises(LostQuorumError) as info:
        await propose(config(cluster, MiB), cluster.connector("A"))
    assert str(info.value).startswith("lost quorum: 1 of 3 safekeepers reachable, need 2")
    assert "connection refused" in str(info.value)


async def test_two_nodes_killed_mid_propose_stops_with_a_clear_quorum_error() -> None:
    cluster = FakeCluster(3)
    for i in (1, 2):
        cluster.stall("A", i, START + MiB)
    async with trio.open_nursery() as nursery:
        errors: list[LostQuorumError] = []

        async def run() -> None:
            with pytest.raises(LostQuorumError) as info:
                await propose(config(cluster, 4 * MiB), cluster.connector("A"))
            errors.append(info.value)

        nursery.start_soon(run)
        await cluster.wait_until(
            lambda: cluster[1].flush_lsn == cluster[2].flush_lsn == START + MiB
        )
        cluster[1].kill()
        cluster[2].kill()
    assert "lost quorum: 1 of 3 safekeepers reachable, need 2" in str(errors[0])


@pytest.mark.parametrize("batch", [False, True], ids=["reply-each", "reply-batched"])
async def test_newer_term_takes_over_and_truncates_the_unacknowledged_tail(batch: bool) -> None:
    """A writes 4 chunks; only node 3 gets them all (nodes 1-2 hang after the first, so A
    commits at most one chunk). B elects on nodes 1-2 in term 2 (node 3 unreachable for
    it), then node 3 joins B: its unacknowledged term-1 tail past the first chunk is
    truncated and replaced by B's WAL. A notices term 2 and stops with NewerTermError.
    (Sizes are in chunks, ``MAX_SEND_SIZE``: a stall holds whole appends.)"""
    chunk = MAX_SEND_SIZE
    cluster = FakeCluster(3, batch=batch)
    cut = START + chunk
    cluster.stall("A", 0, cut)
    cluster.stall("A", 1, cut)
    cluster.block("B", 2)
    cluster.stall("B", 1, cut + chunk)  # B's quorum needs node 3 to finish
    a_errors: list[NewerTermError] = []
    b_results: list[ProposeResult] = []

    async def run_a() -> None:
        with pytest.raises(NewerTermError) as info:
            await propose(config(cluster, 4 * chunk, seed=1), cluster.connector("A"))
        a_errors.append(info.value)

    async def run_b() -> None:
        cfg = config(cluster, 2 * chunk, seed=2, drain_timeout=0.1)
        b_results.append(await propose(cfg, cluster.connector("B")))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_a)
            await cluster.wait_until(
                lambda: (
                    cluster[2].flush_lsn == START + 4 * chunk
                    and cluster[0].flush_lsn == cluster[1].flush_lsn == cut
                )
            )
            nursery.start_soon(run_b)
            await cluster.wait_until(lambda: cluster[0].acceptor.term_history[-1].term == 2)
            cluster.unblock("B", 2)

    assert a_errors[0].term == 2
    assert "newer term 2" in str(a_errors[0])
    assert "another proposer took over" in str(a_errors[0])
    b = b_results[0]
    assert b.term == 2
    assert b.start_lsn == cut
    assert b.commit_lsn == b.end_lsn == cut + 2 * chunk
    expected = gen(1, chunk) + gen(2, 2 * chunk)
    assert cluster[0].durable_wal() == expected
    assert cluster[2].durable_wal() == expected  # A's tail past the first chunk is gone
    assert cluster[2].acceptor.term_history == TermHistory.of((0, START), (1, START), (2, cut))


async def test_a_node_behind_the_term_start_is_caught_up_from_the_donor() -> None:
    cluster = FakeCluster(3)
    cluster[2].kill()
    with trio.fail_after(20):
        first = await propose(config(cluster, 2 * MiB, drain_timeout=0.1), cluster.connector("A"))
    cluster[2].restart()
    with trio.fail_after(20):
        second = await propose(
            config(cluster, MiB, seed=2), cluster.connector("B"), fetch_wal=cluster.fetcher()
        )
    assert second.start_lsn == first.end_lsn
    for node in cluster.nodes.values():
        assert node.durable_wal() == gen(1, 2 * MiB) + gen(2, MiB)


async def test_without_a_fetcher_a_node_behind_the_term_start_is_excluded() -> None:
    cluster = FakeCluster(3)
    cluster[2].kill()
    with trio.fail_after(20):
        await propose(config(cluster, MiB, drain_timeout=0.1), cluster.connector("A"))
    cluster[2].restart()
    proposer = Proposer(config(cluster, MiB, seed=2, drain_timeout=0.1), cluster.connector("B"))
    with trio.fail_after(20):
        result = await proposer.run()
    assert result.commit_lsn == START + 2 * MiB
    node3 = proposer.statistics().nodes[cluster.urls[2]]
    assert node3.status == "failed"
    assert node3.last_error is not None
    assert "no WAL fetcher" in node3.last_error
    assert cluster[2].durable_wal() == b""  # no gap was ever created


async def test_start_lsn_mismatch_is_refused_before_writing() -> None:
    cluster = FakeCluster(3)
    with trio.fail_after(10), pytest.raises(Exception, match="not at the requested start LSN"):
        await propose(config(cluster, MiB, expect_start_lsn=Lsn(START + 1)), cluster.connector("A"))
    assert all(node.durable_wal() == b"" for node in cluster.nodes.values())


async def test_a_node_down_is_logged_once_however_often_it_is_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = FakeCluster(3)
    cluster[1].kill()
    cluster[2].kill()
    with trio.fail_after(10), pytest.raises(LostQuorumError) as info:
        # 0.3 s of lost quorum at 10-50 ms back-off: each down node is retried many times.
        await propose(config(cluster, MiB), cluster.connector("A"))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    for url in cluster.urls[1:]:
        assert [w for w in warnings if url in w] == [
            f"safekeeper {url} unavailable (retrying): ConnectionRefusedError: "
            f"{url}: connection refused"
        ]
    # The fatal error is raised, for the caller to report; it is not logged as an error too.
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert str(info.value).startswith("lost quorum")


def _recover_locally(target: FakeCluster, donor_index: int, index: int) -> None:
    """What peer recovery does on node ``index``: vote locally in the donor's term, adopt
    its history from the common point (here the start) and append its durable WAL."""
    donor, node = target[donor_index], target[index]
    term = donor.acceptor.term
    node.handle(VoteRequest(term))
    node.handle(ProposerElected(term, START, donor.acceptor.term_history))
    for lsn in range(START, donor.flush_lsn, MAX_SEND_SIZE):
        end = min(Lsn(lsn + MAX_SEND_SIZE), donor.flush_lsn)
        node.handle(AppendRequest(term, Lsn(lsn), Lsn(0), Lsn(0), donor.read(Lsn(lsn), end)))


async def test_an_elected_proposer_lets_a_node_already_in_its_term_join() -> None:
    """P1 once elected: node 3, never asked for a vote (down at the election), caught up by
    peer recovery and so already in our term; it refuses our vote and must join, not stop
    the run (the proposer stopped with "term already taken" before)."""
    cluster = FakeCluster(3)
    cluster.block("A", 2)
    cluster.stall("A", 0, START + MiB)  # hold the run open: no quorum past 1 MiB
    results: list[ProposeResult] = []

    async def run() -> None:
        results.append(await propose(config(cluster, 3 * MiB, drain_timeout=10.0),
                                     cluster.connector("A")))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await cluster.wait_until(lambda: cluster[1].flush_lsn > START + MiB)
            _recover_locally(cluster, 1, 2)
            assert cluster[2].acceptor.term == cluster[1].acceptor.term
            cluster.unblock("A", 2)
            await cluster.wait_until(lambda: cluster[2].flush_lsn == START + 3 * MiB)
            del cluster.stalls[("A", cluster.urls[0])]
            cluster.block("A", 0)  # a stalled send never returns: reconnect node 1
            cluster.unblock("A", 0)
    assert results[0].commit_lsn == START + 3 * MiB
    for node in cluster.nodes.values():
        assert node.durable_wal() == gen(1, 3 * MiB)


async def test_a_refusal_at_our_term_before_we_are_elected_still_stops_the_run() -> None:
    """P1 before the election: another proposer may hold our term; we must not go on.
    Node 3 grants our term to someone else between our Greeting and our VoteRequest."""
    cluster = FakeCluster(3)
    connect = cluster.connector("A")

    @asynccontextmanager
    async def racing(url: str) -> AsyncIterator[Any]:
        async with connect(url) as conn:
            if url == cluster.urls[2]:
                send = conn.send

                async def send_after_a_rival(msg: Any) -> None:
                    if isinstance(msg, VoteRequest):
                        cluster[2].handle(VoteRequest(msg.term))  # the rival's vote
                    await send(msg)

                conn.send = send_after_a_rival  # type: ignore[method-assign]
            yield conn

    with trio.fail_after(10), pytest.raises(NewerTermError) as info:
        await propose(config(cluster, MiB), racing)
    assert "term already taken" in str(info.value)


async def test_p4a_a_quorum_out_of_disk_ends_the_run_instead_of_reconnecting_forever() -> None:
    cluster = FakeCluster(3)
    cluster[1].disk_full = cluster[2].disk_full = True
    with trio.fail_after(10), pytest.raises(LostQuorumError) as info:
        await propose(config(cluster, MiB), cluster.connector("A"))
    message = str(info.value)
    assert message.startswith("lost quorum: 1 of 3 safekeepers reachable, need 2"), message
    assert "4012" in message
    assert "--max-disk-usage" in message
    assert cluster[1].flush_lsn == cluster[2].flush_lsn == START


async def test_p4a_one_node_out_of_disk_the_run_finishes_and_it_rejoins_once_space_is_back(
) -> None:
    cluster = FakeCluster(3)
    cluster[2].disk_full = True
    async with trio.open_nursery() as nursery:
        results: list[ProposeResult] = []

        async def run() -> None:
            results.append(await propose(config(cluster, 4 * MiB, drain_timeout=5.0),
                                         cluster.connector("A")))

        nursery.start_soon(run)
        await cluster.wait_until(lambda: cluster[0].flush_lsn > START + MiB)
        assert cluster[2].flush_lsn == START
        cluster[2].disk_full = False  # space is back: the node takes WAL again
    assert results[0].commit_lsn == START + 4 * MiB
    await cluster.wait_until(lambda: cluster[2].flush_lsn == START + 4 * MiB)
