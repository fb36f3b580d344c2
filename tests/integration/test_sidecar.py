"""Scenario 8: sidecar mode recovers a node that runs with its own recovery off; a sidecar
started before its node waits for it."""

from __future__ import annotations

import json
import math
import signal

import pytest
import trio

from safekeeper_recovery.testing import DEFAULT_START_LSN, MiB, make_ttid, start_cli, wait_until

from .conftest import ClusterFactory
from .recovery_support import (
    assert_digests_equal,
    lagging_node,
    propose_args,
    recovery_of,
    wait_caught_up,
)

TTID = make_ttid(1, tenant=8)
LATER = make_ttid(2, tenant=8)


@pytest.mark.slow
async def test_sidecar_catches_up_a_node_running_no_recovery(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    cluster[3].extra_args.append("--no-recovery")
    end = await lagging_node(cluster, TTID, 32 * MiB)
    await cluster[3].start()
    assert (await recovery_of(cluster, 3, TTID)).state == "disabled"
    # Without a sidecar nothing recovers node 3: it stays where it was stopped.
    assert await cluster.flush_lsn(3, TTID) == DEFAULT_START_LSN

    sidecar = await start_cli(cluster.work_dir, "sidecar", "sidecar",
                              "--node", cluster[3].http_url, "--min-interval", "0.05",
                              "--log-format", "json")
    try:
        await wait_caught_up(cluster, 3, TTID, end, timeout=60)
        assert await cluster.flush_lsn(3, TTID) == end
        await assert_digests_equal(cluster, TTID, [1, 3], DEFAULT_START_LSN, end)
        assert await cluster.flush_lsn(3, TTID) == end
        # The node's own engine stays off; the sidecar did the work.
        assert (await recovery_of(cluster, 3, TTID)).state == "disabled"

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


@pytest.mark.slow
async def test_a_sidecar_started_before_its_node_waits_then_recovers_it(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    cluster[3].extra_args.append("--no-recovery")
    end = await lagging_node(cluster, TTID, 4 * MiB)  # node 3 is left stopped
    sidecar = await start_cli(cluster.work_dir, "sidecar", "sidecar",
                              "--node", cluster[3].http_url, "--log-format", "json")
    began = trio.current_time()
    try:
        def failures() -> list[dict[str, object]]:
            lines = [json.loads(line) for line in sidecar.stderr().splitlines()
                     if line.startswith("{")]  # a traceback is not JSON: caught below
            return [e for e in lines if "does not answer" in str(e["event"])]

        def waiting() -> bool:
            assert sidecar.process.poll() is None, f"sidecar exited:\n{sidecar.stderr()}"
            return len(failures()) >= 3

        await wait_until(waiting, 20, message="the sidecar to retry the missing node")
        await cluster[3].start()
        waited = trio.current_time() - began
        await wait_caught_up(cluster, 3, TTID, end, timeout=60)
        await assert_digests_equal(cluster, TTID, [1, 3], DEFAULT_START_LSN, end)
        assert sidecar.process.returncode is None, sidecar.stderr()
        sidecar.process.send_signal(signal.SIGTERM)
        result = await sidecar.wait(timeout=15)
    finally:
        sidecar.kill()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    failed = failures()
    # One warning line per failed try, each naming the node; tries back off from 0.5 s
    # doubling to 5 s, so their number grows with the log of the wait, then linearly.
    assert all(e["level"] == "warning" and cluster[3].http_url in str(e["event"])
               for e in failed), failed
    assert "exception" not in json.dumps(failed)
    assert len(failed) <= 5 + math.ceil(waited / 5), (len(failed), waited)
