"""Scenario 8: sidecar mode recovers a node that runs with its own recovery off."""

from __future__ import annotations

import signal

import pytest

from safekeeper_recovery.core import Lsn, TenantId, TenantTimelineId, TimelineId

from .conftest import ClusterFactory
from .harness import DEFAULT_START_LSN, start_cli
from .recovery_support_b import (
    MiB,
    assert_digests_equal,
    lagging_node,
    propose_args,
    recovery_of,
    wait_caught_up,
)

TTID = TenantTimelineId(TenantId.parse("8" * 32), TimelineId.parse("1" * 32))
LATER = TenantTimelineId(TenantId.parse("8" * 32), TimelineId.parse("2" * 32))


@pytest.mark.slow
async def test_sidecar_catches_up_a_node_running_no_recovery(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    cluster[3].extra_args.append("--no-recovery")
    end = await lagging_node(cluster, TTID, 32 * MiB)
    await cluster[3].start()
    assert (await recovery_of(cluster, 3, TTID))["state"] == "disabled"
    # Without a sidecar nothing recovers node 3: it stays where it was stopped.
    assert await cluster.flush_lsn(3, TTID) == DEFAULT_START_LSN

    sidecar = await start_cli(cluster.work_dir, "sidecar", "sidecar",
                              "--node", cluster[3].http_url, "--min-interval", "0.05",
                              "--log-format", "json")
    try:
        await wait_caught_up(cluster, 3, TTID, end, timeout=60)
        assert await cluster.flush_lsn(3, TTID) == end
        await assert_digests_equal(cluster, TTID, [1, 3], DEFAULT_START_LSN, end)
        assert Lsn.parse(str((await cluster.status(3, TTID))["flush_lsn"])) == end
        # The node's own engine stays off; the sidecar did the work.
        assert (await recovery_of(cluster, 3, TTID))["state"] == "disabled"

        # Woken, not polling: a timeline created while the sidecar runs, and WAL that only
        # nodes 1 and 2 get, reach node 3 through the change feed (peer info arriving).
        await cluster.create_timeline(LATER)
        result = await cluster.propose(*propose_args(cluster, LATER, str(4 * MiB),
                                                     ids=[1, 2]))
        assert result.returncode == 0, result.stderr
        later_end = await cluster.flush_lsn(1, LATER)
        await wait_caught_up(cluster, 3, LATER, later_end, timeout=60)
        await assert_digests_equal(cluster, LATER, [1, 3], DEFAULT_START_LSN, later_end)
        assert sidecar.process.returncode is None, sidecar.stderr()
        sidecar.process.send_signal(signal.SIGTERM)
        result = await sidecar.wait(timeout=15)
    finally:
        sidecar.kill()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
