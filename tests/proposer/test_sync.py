"""``sync_safekeepers`` (Neon's sync-safekeepers) against in-process fake safekeepers built
on the real Acceptor: a dead writer's WAL is left on the nodes with its commit not yet
broadcast, and the sync must commit exactly what a quorum holds (rules Y1-Y3)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from safekeeper_recovery.core import (
    MAX_SEND_SIZE,
    AppendRequest,
    AppendResponse,
    Lsn,
    ProposerElected,
    Term,
    TermHistory,
    VoteRequest,
)
from safekeeper_recovery.proposer import (
    LostQuorumError,
    ProposerConfig,
    SyncResult,
    WalGenerator,
    sync_safekeepers,
)
from safekeeper_recovery.testing import MiB

from ._fakes import START, TENANT, TIMELINE, FakeCluster, FakeSafekeeper


def config(cluster: FakeCluster, **kw: Any) -> ProposerConfig:
    fast: dict[str, Any] = {
        "reconnect_min": 0.01,
        "reconnect_max": 0.05,
        "lost_quorum_timeout": 0.3,
        "drain_timeout": 2.0,
        "response_timeout": 5.0,
        "close_timeout": 0.5,
    }
    fast.update(kw)
    return ProposerConfig(cluster.urls, TENANT, TIMELINE, 0, **fast)


def gen(seed: int, nbytes: int) -> bytes:
    return WalGenerator(seed, nbytes).read(0, nbytes)


def dead_writer(node: FakeSafekeeper, term: int, history: TermHistory, start: Lsn,
                data: bytes) -> None:
    """What a writer in ``term`` left on ``node`` before it died: elected, ``data`` appended
    from ``start`` and flushed, but no commit_lsn sent yet (it rides on the next append)."""
    node.handle(VoteRequest(Term(term)))
    node.handle(ProposerElected(Term(term), start, history))
    for off in range(0, len(data), MAX_SEND_SIZE):
        piece = data[off : off + MAX_SEND_SIZE]
        reply = node.handle(AppendRequest(Term(term), Lsn(start + off), Lsn(0), Lsn(0), piece))
        assert isinstance(reply, AppendResponse)
        assert reply.flush_lsn == start + off + len(piece)
    assert node.acceptor.commit_lsn == START


async def run_sync(cluster: FakeCluster, *, fetch: bool = True, **kw: Any) -> SyncResult:
    with trio.fail_after(20):
        return await sync_safekeepers(config(cluster, **kw), cluster.connector("sync"),
                                      fetch_wal=cluster.fetcher() if fetch else None)


async def test_y1_sync_commits_what_the_quorum_holds_and_catches_up_the_laggard() -> None:
    cluster = FakeCluster(3)
    history = TermHistory.of((0, START), (1, START))
    wal = gen(1, 3 * MiB)
    dead_writer(cluster[0], 1, history, START, wal)
    dead_writer(cluster[1], 1, history, START, wal)
    dead_writer(cluster[2], 1, history, START, wal[:MiB])  # lagging

    result = await run_sync(cluster)

    end = START + 3 * MiB
    assert result.term == 2
    assert result.commit_lsn == end
    assert result.donor in cluster.urls[:2]
    assert result.votes[cluster.urls[2]] == START + MiB
    assert set(result.synced) == set(cluster.urls)
    for node in cluster.nodes.values():
        assert node.durable_wal() == wal  # Y1: nothing written beyond what was there
        assert node.acceptor.commit_lsn == end
        assert node.acceptor.term_history == TermHistory.of((0, START), (1, START), (2, end))
    assert f"commit_lsn {end}" in result.summary()
    assert "3 of 3 nodes hold it" in result.summary()
    doc = result.to_json()
    assert doc["commit_lsn"] == str(end)
    assert doc["safekeepers"][cluster.urls[2]] == {
        "flush_lsn_before": str(START + MiB), "flush_lsn": str(end), "synced": True}


async def test_y1_a_tail_of_an_older_term_is_truncated_not_committed() -> None:
    """Node 3 holds a long term-1 tail nobody acknowledged; nodes 1-2 moved on in term 2.
    The donor is the highest last_log_term, not the longest WAL."""
    cluster = FakeCluster(3)
    h1 = TermHistory.of((0, START), (1, START))
    cut = START + MiB
    for i in range(3):
        dead_writer(cluster[i], 1, h1, START, gen(1, MiB if i < 2 else 3 * MiB))
    h2 = TermHistory.of((0, START), (1, START), (2, cut))
    for i in range(2):
        dead_writer(cluster[i], 2, h2, cut, gen(2, MiB))

    result = await run_sync(cluster)

    assert result.commit_lsn == cut + MiB
    assert result.donor in cluster.urls[:2]
    for node in cluster.nodes.values():
        assert node.durable_wal() == gen(1, MiB) + gen(2, MiB)
        assert node.acceptor.commit_lsn == cut + MiB


async def test_y2_without_a_fetcher_a_lagging_node_is_left_out_and_not_counted() -> None:
    cluster = FakeCluster(3)
    history = TermHistory.of((0, START), (1, START))
    for i in range(3):
        dead_writer(cluster[i], 1, history, START, gen(1, MiB if i < 2 else MiB // 2))

    result = await run_sync(cluster, fetch=False, drain_timeout=0.2)

    assert result.commit_lsn == START + MiB
    assert set(result.synced) == set(cluster.urls[:2])
    assert "2 of 3 nodes hold it" in result.summary()
    assert f"{cluster.urls[2]} voted at {START + MiB // 2}, not caught up" in result.summary()
    assert cluster[2].durable_wal() == gen(1, MiB // 2)  # untouched, no gap
    assert [cluster[i].acceptor.commit_lsn for i in range(2)] == [START + MiB] * 2


async def test_y2_a_node_down_does_not_stop_the_sync_of_the_quorum() -> None:
    cluster = FakeCluster(3)
    history = TermHistory.of((0, START), (1, START))
    for i in range(3):
        dead_writer(cluster[i], 1, history, START, gen(1, MiB))
    cluster[0].kill()

    result = await run_sync(cluster)

    assert result.commit_lsn == START + MiB
    assert result.flush_lsns[cluster.urls[0]] is None
    assert f"{cluster.urls[0]} not reached" in result.summary()
    assert cluster[0].acceptor.commit_lsn == START  # never reached
    assert cluster[1].acceptor.commit_lsn == cluster[2].acceptor.commit_lsn == START + MiB


async def test_y3_no_quorum_is_a_clear_error_and_changes_no_commit() -> None:
    cluster = FakeCluster(3)
    history = TermHistory.of((0, START), (1, START))
    for i in range(3):
        dead_writer(cluster[i], 1, history, START, gen(1, MiB))
    cluster[0].kill()
    cluster[1].kill()

    with pytest.raises(LostQuorumError) as info:
        await run_sync(cluster)

    assert str(info.value).startswith("lost quorum: 1 of 3 safekeepers reachable, need 2")
    assert cluster[2].acceptor.commit_lsn == START
    assert cluster[2].durable_wal() == gen(1, MiB)


async def test_sync_twice_commits_the_same_lsn_in_a_new_term() -> None:
    cluster = FakeCluster(3)
    history = TermHistory.of((0, START), (1, START))
    for i in range(3):
        dead_writer(cluster[i], 1, history, START, gen(1, MiB))

    first = await run_sync(cluster)
    second = await run_sync(cluster)

    assert (first.term, second.term) == (2, 3)
    assert first.commit_lsn == second.commit_lsn == START + MiB
    for node in cluster.nodes.values():
        assert node.durable_wal() == gen(1, MiB)


async def test_sync_of_an_empty_timeline_commits_its_start() -> None:
    cluster = FakeCluster(3)
    result = await run_sync(cluster)
    assert result.commit_lsn == START
    assert set(result.synced) == set(cluster.urls)
