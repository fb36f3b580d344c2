"""Scenario 4: a proposer connects to node 3 while it recovers a large backlog.

Recovery must give way (its attempt ends as ``proposer_arrived`` or ``term_changed``), the
proposer must succeed, and once both are done the three nodes must hold the same WAL.
"""

from __future__ import annotations

import json

import pytest
import trio

from safekeeper_recovery.core import TenantId, TenantTimelineId, TimelineId
from safekeeper_recovery.proposer import (
    ProposerConfig,
    ProposeResult,
    propose,
    websocket_connector,
    websocket_fetcher,
)

from .conftest import ClusterFactory
from .harness import DEFAULT_START_LSN, Cluster
from .recovery_support_b import (
    MiB,
    assert_digests_equal,
    lagging_node,
    wait_caught_up,
    wait_recovering,
)

TTID = TenantTimelineId(TenantId.parse("4" * 32), TimelineId.parse("1" * 32))
GIVE_WAY = {"proposer_arrived", "term_changed"}


def logged_outcomes(cluster: Cluster, node_id: int) -> list[str]:
    """Outcomes of the node's recovery attempts, from its JSON log (every run so far)."""
    outcomes = []
    for line in cluster[node_id].stderr().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "recovery attempt ended":
            outcomes.append(str(event.get("outcome")))
    return outcomes


@pytest.mark.slow
async def test_proposer_arriving_mid_recovery_stops_it_and_proceeds(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    backlog_end = await lagging_node(cluster, TTID, 128 * MiB)
    await cluster[3].start()
    await wait_recovering(cluster, 3, TTID, DEFAULT_START_LSN + 4 * MiB)
    flush_at_arrival = await cluster.flush_lsn(3, TTID)
    assert flush_at_arrival < backlog_end, "recovery finished before the proposer came"

    # The proposer runs in-process (the library, as the demo does): a CLI process would
    # spend a second starting Python while recovery races on.
    seen: list[object] = []
    results: list[ProposeResult] = []

    async def proposer() -> None:
        urls = tuple(cluster[i].wal_url for i in (1, 2, 3))
        results.append(await propose(
            ProposerConfig(urls, TTID.tenant_id, TTID.timeline_id, 16 * MiB, seed=4),
            websocket_connector(TTID.tenant_id, TTID.timeline_id),
            fetch_wal=websocket_fetcher(TTID.tenant_id, TTID.timeline_id),
        ))

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(proposer)
            # Watch node 3's status while the proposer runs: the attempt it interrupts
            # must end as proposer_arrived / term_changed (a later attempt may overwrite
            # last_outcome once the proposer is gone, so look now).
            while not results and not GIVE_WAY & set(map(str, seen)):
                recovery = (await cluster.status(3, TTID))["recovery"]
                assert isinstance(recovery, dict)
                seen.append(recovery["last_outcome"])
                await trio.sleep(0.02)
    outcomes = logged_outcomes(cluster, 3)
    assert GIVE_WAY & set(map(str, seen)), (seen, outcomes)
    # The first attempt (the one streaming the backlog) is the one that gave way.
    assert outcomes, seen
    assert outcomes[0] in GIVE_WAY, outcomes

    (result,) = results
    start, commit = result.start_lsn, result.commit_lsn
    # The proposer continued after the backlog the quorum {1, 2} already held.
    assert start == backlog_end, (start, backlog_end)
    assert commit == start + 16 * MiB, result.summary()

    # The proposer's committed WAL is on a quorum, byte-identical.
    holders = [i for i in (1, 2, 3) if await cluster.flush_lsn(i, TTID) >= commit]
    assert len(holders) >= 2, holders
    await assert_digests_equal(cluster, TTID, holders, DEFAULT_START_LSN, commit)

    # Recovery (or the proposer's own catch-up) settles: every node ends at the same WAL.
    for i in (1, 2, 3):
        await wait_caught_up(cluster, i, TTID, commit, timeout=60)
    flushes = {i: await cluster.flush_lsn(i, TTID) for i in (1, 2, 3)}
    assert set(flushes.values()) == {commit}, flushes
    await assert_digests_equal(cluster, TTID, [1, 2, 3], DEFAULT_START_LSN,
                               min(flushes.values()))
