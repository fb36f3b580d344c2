"""Peer recovery between real ``serve`` processes: a lagging node catches up, a divergent
tail is truncated, no-donor reasons, and the recovery admin endpoints."""

from __future__ import annotations

import pytest
import trio

from safekeeper_recovery.core import TermLsn
from safekeeper_recovery.testing import DEFAULT_START_LSN, MiB, make_ttid, run_cli, wait_until
from safekeeper_recovery.transport import HttpError, RecoveryReport

from .conftest import ClusterFactory
from .recovery_support import (
    assert_digests_equal,
    inject_divergent_tail,
    propose_args,
    recovery_of,
    wait_caught_up_with,
    wait_recovery,
)


@pytest.mark.slow
async def test_a_lagging_node_catches_up_from_a_peer(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    ttid = make_ttid(1)
    await cluster.start()
    await cluster.create_timeline(ttid)
    await cluster[3].terminate()
    result = await run_cli("propose", *propose_args(cluster, ttid, "64MiB", ids=[1, 2]), timeout=90)
    assert result.returncode == 0, result.stderr
    end = DEFAULT_START_LSN + 64 * MiB
    assert await cluster.flush_lsn(1, ttid) == end

    await cluster[3].start()
    assert await wait_caught_up_with(cluster, 3, 1, ttid, timeout=60) == end
    await wait_recovery(cluster, 3, ttid, lambda r: r.last_outcome == "caught_up", 15,
                        "sk3's attempt to end as caught_up")
    await assert_digests_equal(cluster, ttid, [1, 3], DEFAULT_START_LSN, end)
    await assert_digests_equal(cluster, ttid, [2, 3], DEFAULT_START_LSN, end)
    s1, s3 = await cluster.timeline_status(1, ttid), await cluster.timeline_status(3, ttid)
    assert s3.term == s1.term
    assert s3.last_log_term == s1.last_log_term

    # commit_lsn travels through peer info: sk3 learns the quorum's commit position too.
    commit1 = await cluster.commit_lsn(1, ttid)
    assert commit1 == end

    async def commit_caught_up() -> bool:
        return await cluster.commit_lsn(3, ttid) >= commit1

    await wait_until(commit_caught_up, 15, message="sk3's commit_lsn to reach sk1's")


@pytest.mark.slow
async def test_a_divergent_tail_of_a_losing_term_is_truncated(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    ttid = make_ttid(3)
    await cluster.start()
    await cluster.create_timeline(ttid)
    first = await run_cli("propose", *propose_args(cluster, ttid, "4MiB", ids=[1, 2, 3]))
    assert first.returncode == 0, first.stderr
    common = DEFAULT_START_LSN + 4 * MiB
    # sk3 alone gets a term-2 tail (sk1/sk2 are down, so nobody recovers it from sk3).
    await cluster[1].terminate()
    await cluster[2].terminate()
    tail_start, tail_end = await inject_divergent_tail(cluster, 3, ttid, term=2, nbytes=MiB)
    assert tail_start == common
    assert await cluster.flush_lsn(3, ttid) == tail_end
    await cluster[3].terminate()
    # A real leader (term 3: sk1/sk2 are bumped past the fake term 2) writes elsewhere.
    await cluster.start([1, 2])
    for i in (1, 2):
        async with cluster[i].client() as client:
            await client.term_bump(ttid, 2)
    second = await run_cli("propose",
                           *propose_args(cluster, ttid, "8MiB", "--seed", "7", ids=[1, 2]))
    assert second.returncode == 0, second.stderr
    end = common + 8 * MiB
    assert await cluster.flush_lsn(1, ttid) == end
    history1 = (await cluster.timeline_status(1, ttid)).term_history
    assert history1[-1] == TermLsn(3, common), history1

    await cluster[3].start()
    assert await wait_caught_up_with(cluster, 3, 1, ttid, timeout=30) == end
    await wait_recovery(cluster, 3, ttid, lambda r: r.last_outcome == "caught_up", 15,
                        "sk3's attempt to end as caught_up")
    assert await cluster.flush_lsn(3, ttid) == end
    await assert_digests_equal(cluster, ttid, [1, 3], DEFAULT_START_LSN, end)
    await assert_digests_equal(cluster, ttid, [2, 3], DEFAULT_START_LSN, end)
    history3 = (await cluster.timeline_status(3, ttid)).term_history
    assert history3 == history1
    assert all(entry.term != 2 for entry in history3), history3


@pytest.mark.slow
async def test_no_donor_when_our_term_is_above_every_peer(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    ttid = make_ttid(4)
    await cluster.start()
    await cluster.create_timeline(ttid)
    async with cluster[3].client() as client:
        await client.term_bump(ttid, 10)
    await cluster[3].terminate()
    result = await run_cli("propose", *propose_args(cluster, ttid, "2MiB", ids=[1, 2]))
    assert result.returncode == 0, result.stderr
    await cluster[3].start()

    def term_rule(rec: RecoveryReport) -> bool:
        return rec.why_no_donor is not None and rec.why_no_donor.count("< our term 10") == 2

    rec = await wait_recovery(cluster, 3, ttid, term_rule, 15,
                              "sk3 to explain the term rule for both peers")
    assert rec.attempts == 0, rec
    # Over 3 s of peer info (pushed every 200 ms, each push wakes the supervisor) sk3
    # keeps declining: watched throughout, not just sampled at the end.
    with trio.move_on_after(3):
        while True:
            rec = await recovery_of(cluster, 3, ttid)
            assert rec.attempts == 0, rec
            assert term_rule(rec), rec
            await trio.sleep(0.1)
    assert await cluster.flush_lsn(3, ttid) == DEFAULT_START_LSN


@pytest.mark.slow
async def test_no_donor_when_no_peer_is_ahead(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    ttid = make_ttid(5)
    await cluster.start()
    await cluster.create_timeline(ttid)
    result = await run_cli("propose", *propose_args(cluster, ttid, "2MiB", ids=[1, 2, 3]))
    assert result.returncode == 0, result.stderr
    end = DEFAULT_START_LSN + 2 * MiB
    for i in (1, 2, 3):
        assert await cluster.flush_lsn(i, ttid) == end

    def not_ahead(rec: RecoveryReport) -> bool:
        return rec.why_no_donor is not None and rec.why_no_donor.count("not ahead") == 2

    for i in (1, 2, 3):
        rec = await wait_recovery(cluster, i, ttid, not_ahead, 15,
                                  f"sk{i} to see no peer ahead")
        assert rec.state == "idle", rec


@pytest.mark.slow
async def test_recovery_admin_endpoints(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    ttid = make_ttid(2)
    await cluster.start()
    await cluster.create_timeline(ttid)
    async with cluster[1].client() as client:
        listing = await client.recovery_list()
        mine = [r for r in listing if r["timeline_id"] == str(ttid.timeline_id)]
        assert len(mine) == 1, listing
        assert mine[0]["tenant_id"] == str(ttid.tenant_id)
        assert mine[0]["state"] in {"idle", "backoff", "recovering"}, mine
        await client.recovery_trigger(ttid)  # 200 for a known timeline
        with pytest.raises(HttpError) as info:
            await client.recovery_trigger(make_ttid(99))
        assert info.value.status == 404
