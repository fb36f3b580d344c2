"""Real processes under failure: SIGKILL mid-propose, a newer proposer, SIGTERM + restart."""

from __future__ import annotations

import re

import pytest

from safekeeper_recovery.core import Lsn, TenantTimelineId, TermLsn
from safekeeper_recovery.testing import DEFAULT_START_LSN, Cluster, MiB, make_ttid, wait_until

from .conftest import ClusterFactory
from .recovery_support import propose_args
from .test_node_propose import summary_lsn


async def wait_for_progress(cluster: Cluster, node_id: int, ttid: TenantTimelineId,
                            nbytes: int) -> None:
    async def advanced() -> bool:
        return await cluster.flush_lsn(node_id, ttid) >= DEFAULT_START_LSN + nbytes

    await wait_until(advanced, 30, message=f"node {node_id} to flush {nbytes} bytes")


async def commit_lsn_seen(cluster: Cluster, ttid: TenantTimelineId, ids: list[int]) -> Lsn:
    """The highest commit_lsn any of ``ids`` reports: every byte below it was acknowledged
    by a quorum (a node's commit_lsn only ever comes from the proposer's)."""
    best = DEFAULT_START_LSN
    for i in ids:
        best = max(best, await cluster.commit_lsn(i, ttid))
    return best


async def assert_quorum_holds(cluster: Cluster, ttid: TenantTimelineId, until: Lsn) -> None:
    """At least a quorum of the running nodes hold [start, until), all the same bytes."""
    running = [i for i, node in cluster.nodes.items() if node.running]
    holders = [i for i in running if await cluster.flush_lsn(i, ttid) >= until]
    assert len(holders) >= len(cluster.nodes) // 2 + 1, (holders, until)
    digests = {i: await cluster.digest(i, ttid, DEFAULT_START_LSN, until) for i in holders}
    assert len(set(digests.values())) == 1, digests


@pytest.mark.slow
async def test_one_node_killed_mid_propose_the_quorum_finishes(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    ttid = make_ttid(1)
    await cluster.start()
    await cluster.create_timeline(ttid)
    run = await cluster.start_propose("p1", *propose_args(cluster, ttid, "96MiB"))
    try:
        await wait_for_progress(cluster, 3, ttid, 4 * MiB)
        await cluster[3].kill()
        result = await run.wait()
    finally:
        run.kill()
    assert result.returncode == 0, result.stderr
    end = DEFAULT_START_LSN + 96 * MiB
    assert summary_lsn(result.stdout, "commit_lsn") == end
    assert await cluster.flush_lsn(1, ttid) == end
    assert await cluster.flush_lsn(2, ttid) == end
    await assert_quorum_holds(cluster, ttid, end)
    # The killed node comes back with a consistent prefix of the same WAL.
    await cluster[3].start()
    flush3 = await cluster.flush_lsn(3, ttid)
    assert DEFAULT_START_LSN < flush3 <= end
    assert await cluster.digest(3, ttid, DEFAULT_START_LSN, flush3) == await cluster.digest(
        1, ttid, DEFAULT_START_LSN, flush3
    )


@pytest.mark.slow
async def test_two_nodes_killed_the_proposer_stops_and_no_acknowledged_byte_is_lost(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    ttid = make_ttid(2)
    await cluster.start()
    await cluster.create_timeline(ttid)
    run = await cluster.start_propose(
        "p2", *propose_args(cluster, ttid, "512MiB", "--lost-quorum-timeout", "2")
    )
    try:
        await wait_for_progress(cluster, 2, ttid, 4 * MiB)

        async def acknowledged_some() -> bool:
            # A node learns the commit from the proposer's next append: it lags the flush.
            return await commit_lsn_seen(cluster, ttid, [1, 2, 3]) > DEFAULT_START_LSN

        await wait_until(acknowledged_some, 30, message="a commit_lsn past the start")
        acknowledged = await commit_lsn_seen(cluster, ttid, [1, 2, 3])
        await cluster[2].kill()
        await cluster[3].kill()
        result = await run.wait(timeout=60)
    finally:
        run.kill()
    assert result.returncode != 0
    assert "lost quorum" in result.stderr, result.stderr
    # If the proposer reports its commit_lsn on failure, that is the acknowledged end.
    m = re.search(r"commit_lsn ([0-9A-F]+/[0-9A-F]+)", result.stderr)
    if m is not None:
        acknowledged = max(acknowledged, Lsn.parse(m.group(1)))
    assert acknowledged > DEFAULT_START_LSN
    await cluster.start([2, 3])
    await assert_quorum_holds(cluster, ttid, acknowledged)


@pytest.mark.slow
async def test_a_newer_proposer_takes_over_and_truncates_the_unacknowledged_tail(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    ttid = make_ttid(3)
    await cluster.start()
    await cluster.create_timeline(ttid)
    first = await cluster.start_propose(
        "first", *propose_args(cluster, ttid, "512MiB", "--seed", "1")
    )
    try:
        await wait_for_progress(cluster, 1, ttid, 4 * MiB)
        second = await cluster.propose(*propose_args(cluster, ttid, "8MiB", "--seed", "2"))
        first_result = await first.wait(timeout=60)
    finally:
        first.kill()
    assert second.returncode == 0, second.stderr
    assert first_result.returncode != 0
    assert "newer term" in first_result.stderr, first_result.stderr

    m = re.search(r"term (\d+): wrote \d+ bytes ([0-9A-F]+/[0-9A-F]+)\.\.", second.stdout)
    assert m is not None, second.stdout
    term, start = int(m.group(1)), Lsn.parse(m.group(2))
    end = summary_lsn(second.stdout, "commit_lsn")
    assert end == start + 8 * MiB
    await assert_quorum_holds(cluster, ttid, end)
    for i in cluster.nodes:
        status = await cluster.timeline_status(i, ttid)
        if status.flush_lsn < end:
            continue
        assert status.term_history[-1] == TermLsn(term, start), status.term_history
        # The first proposer's tail past ``start`` is gone: WAL ends at the second's end.
        assert status.flush_lsn == end


@pytest.mark.slow
async def test_sigterm_exits_zero_and_a_restart_sees_every_acknowledged_byte(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    ttid = make_ttid(4)
    await cluster.start()
    await cluster.create_timeline(ttid)
    result = await cluster.propose(*propose_args(cluster, ttid, "16MiB"))
    assert result.returncode == 0, result.stderr
    end = summary_lsn(result.stdout, "commit_lsn")
    before = {i: await cluster.digest(i, ttid, DEFAULT_START_LSN, end) for i in cluster.nodes}
    for node in cluster.nodes.values():
        await node.terminate()  # asserts exit status 0
    await cluster.start()
    for i in cluster.nodes:
        assert await cluster.flush_lsn(i, ttid) == end
        assert await cluster.digest(i, ttid, DEFAULT_START_LSN, end) == before[i]
        assert await cluster.commit_lsn(i, ttid) == end  # persisted at shutdown


@pytest.mark.slow
async def test_sigterm_mid_propose_exits_zero_with_durable_wal(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    ttid = make_ttid(5)
    await cluster.start()
    await cluster.create_timeline(ttid)
    run = await cluster.start_propose("p5", *propose_args(cluster, ttid, "96MiB"))
    try:
        await wait_for_progress(cluster, 3, ttid, 4 * MiB)
        await cluster[3].terminate()
        result = await run.wait()
    finally:
        run.kill()
    assert result.returncode == 0, result.stderr
    await cluster[3].start()
    flush3 = await cluster.flush_lsn(3, ttid)
    assert flush3 >= DEFAULT_START_LSN + 4 * MiB
    assert await cluster.digest(3, ttid, DEFAULT_START_LSN, flush3) == await cluster.digest(
        1, ttid, DEFAULT_START_LSN, flush3
    )
