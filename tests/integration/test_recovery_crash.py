"""Scenario 7: node 3 is SIGKILLed at random moments during its recovery, many times.

After every restart the node starts with a verified control file (its timeline is ``ok``),
holds a byte-exact prefix of the donor's WAL and never less than it had acknowledged as
flushed before the kill; in the end it reaches the donor's flush with equal digests.
"""

from __future__ import annotations

import os
import random

import pytest
import trio

from safekeeper_recovery.core import TenantTimelineId
from safekeeper_recovery.testing import DEFAULT_START_LSN, Cluster, MiB, make_ttid

from .conftest import ClusterFactory
from .recovery_support import (
    assert_digests_equal,
    lagging_node,
    propose_args,
    timeline_state,
    wait_caught_up,
)

TTID = make_ttid(1, tenant=7)
KILLS = 20
REFILL = 48 * MiB


async def assert_prefix_of_donor(cluster: Cluster, ttid: TenantTimelineId) -> None:
    """Node 3's WAL [start, its flush) is byte-identical to the donor's (node 1's)."""
    flush3 = await cluster.flush_lsn(3, ttid)
    if flush3 > DEFAULT_START_LSN:
        await assert_digests_equal(cluster, ttid, [1, 3], DEFAULT_START_LSN, flush3)


@pytest.mark.slow
async def test_sigkill_during_recovery_loses_nothing_and_recovery_continues(
    make_cluster: ClusterFactory,
) -> None:
    seed = int(os.environ.get("RECOVERY_CRASH_SEED", random.randrange(2**32)))
    print(f"RECOVERY_CRASH_SEED={seed}")  # pytest shows it when the test fails
    rng = random.Random(seed)
    cluster = make_cluster(3)
    end = await lagging_node(cluster, TTID, 96 * MiB)
    node = cluster[3]

    acknowledged = DEFAULT_START_LSN
    kills = 0
    while kills < KILLS:
        await node.start()
        assert await timeline_state(cluster, 3, TTID) == "ok", (seed, node.stderr())
        flush = await cluster.flush_lsn(3, TTID)
        # A flush the node reported before the kill was durable: a restart never goes back.
        assert flush >= acknowledged, (seed, kills, flush, acknowledged)
        await assert_prefix_of_donor(cluster, TTID)
        if flush >= end:
            # Recovered before we killed it often enough: give it a new backlog (a new
            # proposer term on {1, 2}, so restarts also cross a term switch).
            await node.kill()
            extra = await cluster.propose(*propose_args(cluster, TTID, str(REFILL),
                                                        ids=[1, 2]))
            assert extra.returncode == 0, extra.stderr
            end += REFILL
            assert await cluster.flush_lsn(1, TTID) == end
            continue
        await trio.sleep(rng.uniform(0.05, 0.4))  # the random moment (not waiting for luck)
        acknowledged = max(acknowledged, await cluster.flush_lsn(3, TTID))
        await node.kill()
        kills += 1

    await node.start()
    assert await timeline_state(cluster, 3, TTID) == "ok", (seed, node.stderr())
    assert await cluster.flush_lsn(3, TTID) >= acknowledged, seed
    await wait_caught_up(cluster, 3, TTID, end, timeout=60)
    assert await cluster.flush_lsn(3, TTID) == end, seed
    await assert_digests_equal(cluster, TTID, [1, 2, 3], DEFAULT_START_LSN, end)
    recovery = (await cluster.timeline_status(3, TTID)).recovery
    assert recovery.state in ("idle", "recovering"), recovery
