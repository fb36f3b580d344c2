"""Helpers for the recovery integration tests (proposer, crash, sidecar, demo).

The common setup is a *lagging* node: three nodes hold the timeline, node 3 is stopped
while a proposer writes WAL to the quorum {1, 2}; node 3 then has to recover it.
"""

from __future__ import annotations

from collections.abc import Sequence

from safekeeper_recovery.core import Lsn, TenantTimelineId

from .harness import DEFAULT_START_LSN, SEG_SIZE, Cluster, wait_until

__all__ = [
    "MiB",
    "assert_digests_equal",
    "lagging_node",
    "propose_args",
    "recovery_of",
    "timeline_state",
    "wait_caught_up",
    "wait_recovering",
]

MiB = 1024 * 1024


def propose_args(cluster: Cluster, ttid: TenantTimelineId, nbytes: str, *extra: str,
                 ids: Sequence[int] | None = None) -> list[str]:
    """``propose`` arguments writing ``nbytes`` to the nodes ``ids`` (default: all)."""
    urls = ",".join(cluster[i].wal_url for i in (ids or list(cluster.nodes)))
    return [
        "--safekeepers", urls,
        "--tenant-id", str(ttid.tenant_id),
        "--timeline-id", str(ttid.timeline_id),
        "--bytes", nbytes,
        "--wal-seg-size", str(SEG_SIZE),  # propose writes PostgreSQL WAL laid out for it
        "--no-progress",
        *extra,
    ]


async def lagging_node(cluster: Cluster, ttid: TenantTimelineId, nbytes: int, *,
                       lagging: int = 3) -> Lsn:
    """Start every node, create ``ttid`` everywhere, stop ``lagging`` (SIGTERM), write
    ``nbytes`` to the others; return their flush (node ``lagging`` is left stopped)."""
    await cluster.start()
    await cluster.create_timeline(ttid)
    await cluster[lagging].terminate()
    others = [i for i in cluster.nodes if i != lagging]
    result = await cluster.propose(*propose_args(cluster, ttid, str(nbytes), ids=others))
    assert result.returncode == 0, result.stderr
    flushes = {i: await cluster.flush_lsn(i, ttid) for i in others}
    end = DEFAULT_START_LSN + nbytes
    assert set(flushes.values()) == {end}, flushes
    return end


async def recovery_of(cluster: Cluster, node_id: int, ttid: TenantTimelineId
                      ) -> dict[str, object]:
    """The ``recovery`` object of the node's timeline status."""
    recovery = (await cluster.status(node_id, ttid))["recovery"]
    assert isinstance(recovery, dict), recovery
    return recovery


async def timeline_state(cluster: Cluster, node_id: int, ttid: TenantTimelineId) -> object:
    """The ``state`` of ``ttid`` in the node's ``GET /v1/timelines`` listing."""
    async with cluster[node_id].client(cluster.token) as client:
        listing = await client.timelines()
    for entry in listing:
        if entry.get("timeline_id") == str(ttid.timeline_id) and entry.get(
            "tenant_id") == str(ttid.tenant_id):
            return entry.get("state")
    raise AssertionError(f"{ttid} not listed by node {node_id}: {listing}")


async def wait_recovering(cluster: Cluster, node_id: int, ttid: TenantTimelineId,
                          min_flush: Lsn, timeout: float = 20.0) -> None:
    """Until the node is recovering and has flushed at least ``min_flush``."""

    async def ready() -> bool:
        status = await cluster.status(node_id, ttid)
        recovery = status["recovery"]
        assert isinstance(recovery, dict)
        return (recovery["state"] == "recovering"
                and Lsn.parse(str(status["flush_lsn"])) >= min_flush)

    await wait_until(ready, timeout, message=f"node {node_id} recovering past {min_flush}")


async def wait_caught_up(cluster: Cluster, node_id: int, ttid: TenantTimelineId,
                         target: Lsn, timeout: float = 60.0) -> None:
    async def done() -> bool:
        return await cluster.flush_lsn(node_id, ttid) >= target

    await wait_until(done, timeout, message=f"node {node_id} to flush up to {target}")


async def assert_digests_equal(cluster: Cluster, ttid: TenantTimelineId, ids: Sequence[int],
                               from_lsn: Lsn, until_lsn: Lsn) -> str:
    """Fetch the digest of [from, until) from each node separately; all must agree."""
    digests = {i: await cluster.digest(i, ttid, from_lsn, until_lsn) for i in ids}
    assert len(set(digests.values())) == 1, (from_lsn, until_lsn, digests)
    return digests[ids[0]]
