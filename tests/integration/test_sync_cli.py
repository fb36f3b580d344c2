"""``safekeeper-recovery sync`` against real node processes: a writer dies with WAL on the
nodes beyond the commit it broadcast; with one node down and one lagging, ``sync`` commits
exactly what the most advanced node of the quorum holds and prints it; without a quorum it
exits 3 with one ``Error:`` line."""

from __future__ import annotations

import json

import pytest

from safekeeper_recovery.cli._sync import EXIT_NO_QUORUM
from safekeeper_recovery.core import Lsn
from safekeeper_recovery.testing import (
    DEFAULT_START_LSN,
    Cluster,
    MiB,
    make_ttid,
    run_cli,
    wait_until,
)

from .conftest import ClusterFactory
from .recovery_support import propose_args

TTID = make_ttid(16, tenant=0x5C)
IDS = ("--tenant-id", str(TTID.tenant_id), "--timeline-id", str(TTID.timeline_id))


async def writer_dies_ahead_of_its_commit(cluster: Cluster) -> tuple[Lsn, Lsn]:
    """Nodes 1-2 take a writer's WAL (node 3 is down); node 1 is killed, so the writer can
    commit no more but keeps streaming to node 2; then the writer is killed. Returns node
    2's (flush, commit) afterwards: flush is at least 1 MiB ahead."""
    await cluster.start([1, 2])
    await cluster.create_timeline(TTID, ids=[1, 2])
    writer = await cluster.start_propose(
        "writer", *propose_args(cluster, TTID, "1GiB", "--lost-quorum-timeout", "60s"))
    try:
        async def streaming() -> bool:
            return await cluster.commit_lsn(2, TTID) > DEFAULT_START_LSN
        await wait_until(streaming, 60, message="the writer to commit on nodes 1-2")
        await cluster[1].kill()

        async def ahead() -> bool:
            status = await cluster.timeline_status(2, TTID)
            return status.flush_lsn - status.commit_lsn >= MiB

        await wait_until(ahead, 60, message="node 2 to hold WAL beyond its commit_lsn")
    finally:
        writer.kill()
    await writer.wait(timeout=30)

    async def writer_gone() -> bool:  # node 2 has processed what was still in flight
        return (await cluster.timeline_status(2, TTID)).connected_proposers == 0

    await wait_until(writer_gone, 30, message="node 2 to see the writer's connection close")
    status = await cluster.timeline_status(2, TTID)
    return status.flush_lsn, status.commit_lsn


@pytest.mark.slow
async def test_sync_with_one_node_down_and_one_lagging_commits_the_quorums_wal(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    flush, commit_before = await writer_dies_ahead_of_its_commit(cluster)
    assert commit_before < flush
    # Node 3 lags: a new timeline, and no peer recovery of its own, so the sync itself must
    # catch it up from the donor (proposer rule P3).
    cluster[3].extra_args.append("--no-recovery")
    await cluster.start([3])
    await cluster.create_timeline(TTID, ids=[3])
    assert await cluster.flush_lsn(3, TTID) == DEFAULT_START_LSN

    done = await run_cli("sync", "--safekeepers", cluster.wal_urls, *IDS, timeout=120)

    assert done.returncode == 0, done.stderr
    synced = Lsn.parse(done.stdout.strip())  # stdout: the commit LSN alone
    # Y1: node 2's WAL, all of it (a write the node flushed only as the writer's connection
    # closed may have moved it past what we read).
    assert synced >= flush
    flush = synced
    assert not any(line.startswith("Error:") for line in done.stderr.splitlines()), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert f"commit_lsn {flush} (donor {cluster[2].wal_url})" in done.stderr
    assert "2 of 3 nodes hold it" in done.stderr
    assert f"{cluster[1].wal_url} not reached" in done.stderr
    for i in (2, 3):
        status = await cluster.timeline_status(i, TTID)
        assert (status.flush_lsn, status.commit_lsn) == (flush, flush), i
    assert await cluster.digest(2, TTID, commit_before, flush) == await cluster.digest(
        3, TTID, commit_before, flush)

    # Node 1 comes back behind the new term's commit and catches up from its peers.
    await cluster.start([1])

    async def node1_synced() -> bool:
        return await cluster.commit_lsn(1, TTID) >= flush

    await wait_until(node1_synced, 60, message="node 1 to catch up with the synced commit")
    assert await cluster.flush_lsn(1, TTID) == flush

    # A second sync (all three up) changes nothing but the term; --json says so.
    again = await run_cli("sync", "--safekeepers", cluster.wal_urls, *IDS, "--json",
                          timeout=120)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["commit_lsn"] == str(flush)
    assert {u: s["synced"] for u, s in doc["safekeepers"].items()} == {
        n.wal_url: True for n in cluster.nodes.values()}


@pytest.mark.slow
async def test_sync_without_a_quorum_exits_3_with_one_error_line(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    await cluster.start([1])
    await cluster.create_timeline(TTID, ids=[1])

    done = await run_cli("sync", "--safekeepers", cluster.wal_urls, *IDS,
                         "--lost-quorum-timeout", "1s", "--connect-timeout", "2s", timeout=60)

    assert done.returncode == EXIT_NO_QUORUM, (done.returncode, done.stderr)
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr
    assert "lost quorum: 1 of 3 safekeepers reachable, need 2" in errors[0]
    assert cluster[2].wal_url in errors[0]
    assert cluster[3].wal_url in errors[0]
    assert "Traceback" not in done.stderr

    as_json = await run_cli("sync", "--safekeepers", cluster.wal_urls, *IDS, "--json",
                            "--lost-quorum-timeout", "1s", "--connect-timeout", "2s",
                            timeout=60)
    assert as_json.returncode == EXIT_NO_QUORUM
    assert json.loads(as_json.stdout)["error"] == "no_quorum"
    # Nothing was committed by the failed attempts.
    assert await cluster.commit_lsn(1, TTID) == (await cluster.timeline_status(1, TTID)
                                                 ).timeline_start_lsn
