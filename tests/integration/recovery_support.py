"""Helpers for the real-process peer-recovery tests (status fields, waits, WAL checks).

Every wait has a deadline; digests are always fetched from each node separately.
"""

from __future__ import annotations

import json
import random
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from safekeeper_recovery.core import (
    MAX_SEND_SIZE,
    AcceptorGreeting,
    AppendRequest,
    AppendResponse,
    Greeting,
    Lsn,
    ProposerElected,
    TenantId,
    TenantTimelineId,
    Term,
    TermHistory,
    TermLsn,
    TimelineId,
    VoteRequest,
    VoteResponse,
)
from safekeeper_recovery.transport import open_wal_push

from .harness import DEFAULT_START_LSN, SEG_SIZE, Cluster, NodeProcess, wait_until

__all__ = [
    "MiB",
    "acceptor_state",
    "assert_same_wal",
    "attempts_logged",
    "frozen",
    "inject_divergent_tail",
    "lsn_field",
    "propose_to",
    "recovery_status",
    "ttid_for",
    "wait_caught_up",
    "wait_mid_recovery",
    "wait_recovery",
]

MiB: Final = 1024 * 1024
TENANT: Final = TenantId.parse("f" * 32)


def ttid_for(n: int) -> TenantTimelineId:
    return TenantTimelineId(TENANT, TimelineId.parse(f"{n:032x}"))


def lsn_field(doc: dict[str, object], name: str) -> Lsn:
    value = doc[name]
    assert isinstance(value, str), (name, doc)
    return Lsn.parse(value)


async def recovery_status(cluster: Cluster, node_id: int,
                          ttid: TenantTimelineId) -> dict[str, object]:
    """The ``recovery`` object of the node's timeline status JSON."""
    rec = (await cluster.status(node_id, ttid))["recovery"]
    assert isinstance(rec, dict), rec
    return rec


async def acceptor_state(cluster: Cluster, node_id: int,
                         ttid: TenantTimelineId) -> dict[str, object]:
    state = (await cluster.status(node_id, ttid))["acceptor_state"]
    assert isinstance(state, dict), state
    return state


def propose_to(cluster: Cluster, ids: list[int], ttid: TenantTimelineId, nbytes: str,
               *extra: str) -> list[str]:
    """``propose`` arguments naming only the WAL ports of ``ids``."""
    return [
        "--safekeepers", ",".join(cluster[i].wal_url for i in ids),
        "--tenant-id", str(ttid.tenant_id),
        "--timeline-id", str(ttid.timeline_id),
        "--bytes", nbytes,
        "--wal-seg-size", str(SEG_SIZE),  # propose writes PostgreSQL WAL laid out for it
        "--no-progress",
        *extra,
    ]


async def wait_recovery(cluster: Cluster, node_id: int, ttid: TenantTimelineId,
                        predicate: object, timeout: float, message: str) -> dict[str, object]:
    """Poll the node's ``recovery`` status until ``predicate(rec)``; return that status."""
    assert callable(predicate)
    seen: list[dict[str, object]] = []

    async def check() -> bool:
        rec = await recovery_status(cluster, node_id, ttid)
        seen[:] = [rec]
        return bool(predicate(rec))

    try:
        await wait_until(check, timeout, message=message)
    except AssertionError as e:
        raise AssertionError(f"{e}; last recovery status of node {node_id}: {seen}") from None
    return seen[0]


async def wait_caught_up(cluster: Cluster, node_id: int, donor_id: int,
                         ttid: TenantTimelineId, timeout: float) -> Lsn:
    """Wait until ``node_id`` flushed up to ``donor_id``'s flush_lsn; return that LSN."""
    target = await cluster.flush_lsn(donor_id, ttid)

    async def reached() -> bool:
        return await cluster.flush_lsn(node_id, ttid) >= target

    try:
        await wait_until(reached, timeout, message=f"node {node_id} to reach {target}")
    except AssertionError as e:
        rec = await recovery_status(cluster, node_id, ttid)
        raise AssertionError(f"{e}; recovery status: {rec}\n{cluster[node_id].stderr()[-3000:]}"
                             ) from None
    return target


async def assert_same_wal(cluster: Cluster, a: int, b: int, ttid: TenantTimelineId,
                          until: Lsn, from_lsn: Lsn = DEFAULT_START_LSN) -> None:
    """Nodes ``a`` and ``b`` (distinct) hold the same bytes in ``[from_lsn, until)``."""
    assert a != b
    da = await cluster.digest(a, ttid, from_lsn, until)
    db = await cluster.digest(b, ttid, from_lsn, until)
    assert da == db, f"node {a} and node {b} differ over [{from_lsn}, {until})"


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
                            ttid: TenantTimelineId) -> dict[str, object]:
    """Wait until ``node_id`` is recovering and has received some (not all) WAL."""

    def mid_stream(rec: dict[str, object]) -> bool:
        received = rec["bytes"]
        return (rec["state"] == "recovering" and isinstance(received, int) and received > 0
                and rec["received_lsn"] != rec["target_lsn"])

    return await wait_recovery(cluster, node_id, ttid, mid_stream, 30,
                               f"sk{node_id} to be mid-recovery")
