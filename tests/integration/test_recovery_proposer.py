"""Scenario 4: a proposer connects to node 3 while it recovers a large backlog.

Recovery must give way (its attempt ends as ``proposer_arrived`` or ``term_changed``), the
proposer must succeed, and once both are done the three nodes must hold the same WAL.

"While it recovers" is made certain, not raced: once node 3 streams, its donor is frozen
with SIGSTOP, so the backlog cannot finish before the proposer arrives however fast
recovery is or however loaded the machine. The proposer then has exactly a quorum (node 3
and the other node), and the donor is thawed once the proposer is done.
"""

from __future__ import annotations

import json
import signal

import pytest
import trio

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.proposer import (
    ProposerConfig,
    propose,
    websocket_connector,
    websocket_fetcher,
)
from safekeeper_recovery.testing import DEFAULT_START_LSN, Cluster, MiB, make_ttid, wait_until

from .conftest import ClusterFactory
from .recovery_support import (
    assert_digests_equal,
    lagging_node,
    recovery_of,
    wait_caught_up,
    wait_recovering,
)

TTID = make_ttid(1, tenant=4)
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
    # Freeze the donor as soon as the attempt runs (its first bytes need not be in yet).
    await wait_recovering(cluster, 3, TTID, DEFAULT_START_LSN)
    donor = (await recovery_of(cluster, 3, TTID)).donor
    assert donor in (1, 2), donor
    donor_process = cluster[donor].process
    assert donor_process is not None
    donor_process.send_signal(signal.SIGSTOP)
    try:
        commit = await _propose_while_donor_frozen(cluster, backlog_end, live=(3, 3 - donor))
    finally:
        donor_process.send_signal(signal.SIGCONT)

    # Recovery (or the proposer's own catch-up) settles: every node ends at the same WAL.
    for i in (1, 2, 3):
        await wait_caught_up(cluster, i, TTID, commit, timeout=60)
    flushes = {i: await cluster.flush_lsn(i, TTID) for i in (1, 2, 3)}
    assert set(flushes.values()) == {commit}, flushes
    await assert_digests_equal(cluster, TTID, [1, 2, 3], DEFAULT_START_LSN,
                               min(flushes.values()))


async def _propose_while_donor_frozen(cluster: Cluster, backlog_end: Lsn,
                                      live: tuple[int, int]) -> Lsn:
    """Run the proposer while only the nodes ``live`` answer; return its commit_lsn."""
    flush_at_arrival = await cluster.flush_lsn(3, TTID)
    # At most a few socket buffers of the 128 MiB were in flight when the donor froze.
    assert flush_at_arrival < backlog_end, "recovery finished before the proposer came"

    # The proposer runs in-process (the library, as the demo does): a CLI process would
    # spend a second starting Python.
    urls = tuple(cluster[i].wal_url for i in (1, 2, 3))
    with trio.fail_after(90):
        result = await propose(
            ProposerConfig(urls, TTID.tenant_id, TTID.timeline_id, 16 * MiB, seed=4),
            websocket_connector(TTID.tenant_id, TTID.timeline_id),
            fetch_wal=websocket_fetcher(TTID.tenant_id, TTID.timeline_id),
        )
    # The attempt that was streaming the backlog gave way. Its end is logged once its
    # connection to the frozen donor is given up (a bounded close), so wait for the log.
    await wait_until(lambda: bool(logged_outcomes(cluster, 3)), 30,
                     message="node 3 to log the end of its recovery attempt")
    outcomes = logged_outcomes(cluster, 3)
    assert outcomes[0] in GIVE_WAY, outcomes

    start, commit = result.start_lsn, result.commit_lsn
    # The proposer continued after the backlog the quorum {1, 2} held before.
    assert start == backlog_end, (start, backlog_end)
    assert commit == start + 16 * MiB, result.summary()

    # The proposer's committed WAL is on a quorum, byte-identical.
    holders = [i for i in live if await cluster.flush_lsn(i, TTID) >= commit]
    assert len(holders) == 2, holders
    await assert_digests_equal(cluster, TTID, holders, DEFAULT_START_LSN, commit)
    return commit
