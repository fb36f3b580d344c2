"""Helpers for the real-process peer-recovery tests (status fields, waits, WAL checks).

Status is read typed (``Cluster.timeline_status``: ``transport.TimelineStatus``, its
``recovery`` a ``transport.RecoveryReport``), never by indexing the JSON.

The common setup is a *lagging* node (:func:`lagging_node`): three nodes hold the timeline,
node 3 is stopped while a proposer writes WAL to the quorum {1, 2}; node 3 then has to
recover it. Every wait has a deadline; digests are always fetched from each node
separately.
"""

from __future__ import annotations

import json
import random
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from safekeeper_recovery.core import (
    MAX_SEND_SIZE,
    AcceptorGreeting,
    AppendRequest,
    AppendResponse,
    Greeting,
    Lsn,
    ProposerElected,
    TenantTimelineId,
    Term,
    TermHistory,
    TermLsn,
    VoteRequest,
    VoteResponse,
)
from safekeeper_recovery.testing import (
    DEFAULT_START_LSN,
    SEG_SIZE,
    Cluster,
    NodeProcess,
    wait_until,
)
from safekeeper_recovery.transport import RecoveryReport, open_wal_push

__all__ = [
    "assert_digests_equal",
    "attempts_logged",
    "frozen",
    "inject_divergent_tail",
    "lagging_node",
    "propose_args",
    "recovery_of",
    "timeline_state",
    "wait_caught_up",
    "wait_caught_up_with",
    "wait_mid_recovery",
    "wait_recovering",
    "wait_recovery",
]


async def recovery_of(cluster: Cluster, node_id: int, ttid: TenantTimelineId
                      ) -> RecoveryReport:
    """The ``recovery`` object of the node's timeline status."""
    return (await cluster.timeline_status(node_id, ttid)).recovery


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


async def wait_recovery(cluster: Cluster, node_id: int, ttid: TenantTimelineId,
                        predicate: Callable[[RecoveryReport], bool], timeout: float,
                        message: str) -> RecoveryReport:
    """Poll the node's ``recovery`` status until ``predicate(rec)``; return that status."""
    seen: list[RecoveryReport] = []

    async def check() -> bool:
        rec = await recovery_of(cluster, node_id, ttid)
        seen[:] = [rec]
        return bool(predicate(rec))

    try:
        await wait_until(check, timeout, message=message)
    except AssertionError as e:
        raise AssertionError(f"{e}; last recovery status of node {node_id}: {seen}") from None
    return seen[0]


async def wait_recovering(cluster: Cluster, node_id: int, ttid: TenantTimelineId,
                          min_flush: Lsn, timeout: float = 20.0) -> None:
    """Until the node is recovering and has flushed at least ``min_flush``."""

    async def ready() -> bool:
        status = await cluster.timeline_status(node_id, ttid)
        return status.recovery.state == "recovering" and status.flush_lsn >= min_flush

    await wait_until(ready, timeout, message=f"node {node_id} recovering past {min_flush}")


async def wait_caught_up(cluster: Cluster, node_id: int, ttid: TenantTimelineId,
                         target: Lsn, timeout: float = 60.0) -> None:
    """Wait until ``node_id`` flushed up to ``target`` (failing with its recovery status
    and log tail)."""

    async def reached() -> bool:
        return await cluster.flush_lsn(node_id, ttid) >= target

    try:
        await wait_until(reached, timeout, message=f"node {node_id} to flush up to {target}")
    except AssertionError as e:
        rec = await recovery_of(cluster, node_id, ttid)
        raise AssertionError(f"{e}; recovery status: {rec}\n{cluster[node_id].stderr()[-3000:]}"
                             ) from None


async def wait_caught_up_with(cluster: Cluster, node_id: int, donor_id: int,
                              ttid: TenantTimelineId, timeout: float) -> Lsn:
    """Wait until ``node_id`` flushed up to ``donor_id``'s flush_lsn; return that LSN."""
    target = await cluster.flush_lsn(donor_id, ttid)
    await wait_caught_up(cluster, node_id, ttid, target, timeout)
    return target


async def assert_digests_equal(cluster: Cluster, ttid: TenantTimelineId, ids: Sequence[int],
                               from_lsn: Lsn, until_lsn: Lsn) -> str:
    """Fetch the digest of [from, until) from each node separately; all must agree."""
    assert len(set(ids)) >= 2, f"compare at least two distinct nodes, not {ids}"
    digests = {i: await cluster.digest(i, ttid, from_lsn, until_lsn) for i in ids}
    assert len(set(digests.values())) == 1, (from_lsn, until_lsn, digests)
    return digests[ids[0]]


async def timeline_state(cluster: Cluster, node_id: int, ttid: TenantTimelineId) -> object:
    """The ``state`` of ``ttid`` in the node's ``GET /v1/timelines`` listing."""
    async with cluster[node_id].client(cluster.token) as client:
        listing = await client.timelines()
    for entry in listing:
        if entry.get("timeline_id") == str(ttid.timeline_id) and entry.get(
            "tenant_id") == str(ttid.tenant_id):
            return entry.get("state")
    raise AssertionError(f"{ttid} not listed by node {node_id}: {listing}")


async def inject_divergent_tail(cluster: Cluster, node_id: int, ttid: TenantTimelineId,
                                term: Term, nbytes: int) -> tuple[Lsn, Lsn]:
    """Act as a one-node 'leader' of ``term`` on ``node_id`` alone and append ``nbytes`` of
    junk after its WAL: a tail of a term nobody else holds. Returns ``(start, end)``."""
    node = cluster[node_id]
    async with open_wal_push(node.wal_url, ttid.tenant_id, ttid.timeline_id) as conn:
        await conn.send(Greeting(ttid.tenant_id, ttid.timeline_id))
        greeting = await conn.receive()
        assert isinstance(greeting, AcceptorGreeting), greeting
        await conn.send(VoteRequest(term))
        vote = await conn.receive()
        assert isinstance(vote, VoteResponse), vote
        assert vote.vote_given, vote
        start = vote.flush_lsn
        history = TermHistory(
            tuple(e for e in vote.term_history if e.lsn <= start)
        ).extended(TermLsn(term, start))
        await conn.send(ProposerElected(term, start, history))
        rng = random.Random(term)
        lsn = start
        end = start + nbytes
        while lsn < end:
            chunk = rng.randbytes(min(MAX_SEND_SIZE, int(end) - int(lsn)))
            await conn.send(AppendRequest(term, lsn, Lsn(0), Lsn(0), chunk))
            lsn = lsn + len(chunk)
        # Wait for the acknowledgement of the last byte: the tail is durable on the node.
        while True:
            reply = await conn.receive()
            if isinstance(reply, AppendResponse) and reply.flush_lsn >= end:
                break
    return start, end


@asynccontextmanager
async def frozen(node: NodeProcess) -> AsyncIterator[None]:
    """SIGSTOP ``node`` for the block (SIGCONT after, even on failure): whatever the node
    is doing — e.g. receiving a recovery stream — is caught mid-way, deterministically."""
    process = node.process
    assert process is not None
    assert node.running, f"node {node.node_id} is not running"
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)


def attempts_logged(node: NodeProcess) -> list[tuple[int, str]]:
    """``(donor, outcome)`` of every ``recovery attempt ended`` line in the node's log."""
    ended = []
    for line in node.stderr().splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        if isinstance(entry, dict) and entry.get("event") == "recovery attempt ended":
            ended.append((int(entry["donor"]), str(entry["outcome"])))
    return ended


async def wait_mid_recovery(cluster: Cluster, node_id: int,
                            ttid: TenantTimelineId) -> RecoveryReport:
    """Wait until ``node_id`` is recovering and has received some (not all) WAL."""

    def mid_stream(rec: RecoveryReport) -> bool:
        return (rec.state == "recovering" and rec.bytes > 0
                and rec.received_lsn != rec.target_lsn)

    return await wait_recovery(cluster, node_id, ttid, mid_stream, 30,
                               f"sk{node_id} to be mid-recovery")
