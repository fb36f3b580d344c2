"""``status`` (the cluster view) and ``recovery trigger|cancel`` against real nodes."""

from __future__ import annotations

import json

import pytest

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.testing import DEFAULT_START_LSN, MiB, make_ttid, run_cli

from .conftest import ClusterFactory

TTID = make_ttid(1)
IDS = ["--tenant-id", str(TTID.tenant_id), "--timeline-id", str(TTID.timeline_id)]


@pytest.mark.slow
async def test_status_shows_every_node_its_lag_and_a_down_node_once(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    cluster[3].extra_args.append("--no-recovery")  # node 3 stays behind: a lag to show
    await cluster.start()
    await cluster.create_timeline(TTID)
    await cluster[3].kill()
    proposed = await cluster.propose("--safekeepers", cluster.wal_urls, *IDS, "--bytes",
                                     "1MiB", "--wal-seg-size", "1MiB", "--no-progress")
    assert proposed.returncode == 0, proposed.stderr
    end = await cluster.flush_lsn(1, TTID)
    await cluster[3].start()
    await cluster[2].kill()
    urls = ",".join(cluster[i].http_url for i in (1, 2, 3))

    result = await run_cli("status", "--node", urls, "--json", "--timeout", "2s")
    assert result.returncode == 1, result.stderr  # a node is down
    doc = json.loads(result.stdout)
    assert doc["at_iso"].endswith("Z")
    nodes = {n["url"]: n for n in doc["nodes"]}
    assert nodes[cluster[1].http_url]["up"] is True
    assert nodes[cluster[1].http_url]["node_id"] == 1
    down = nodes[cluster[2].http_url]
    assert down["up"] is False
    assert down["error"].startswith(f"{cluster[2].http_url}: no answer")
    [timeline] = doc["timelines"]
    views = {v["node"]: v for v in timeline["nodes"]}
    assert views[cluster[1].http_url]["flush_lsn"] == str(end)
    assert views[cluster[1].http_url]["lag_bytes"] == 0
    assert views[cluster[2].http_url]["state"] == "down"
    assert views[cluster[2].http_url]["flush_lsn"] is None
    assert views[cluster[3].http_url]["flush_lsn"] == str(DEFAULT_START_LSN)
    assert views[cluster[3].http_url]["lag_bytes"] == int(end) - int(DEFAULT_START_LSN)
    assert views[cluster[3].http_url]["recovery"]["state"] == "disabled"

    table = await run_cli("status", "--node", urls, "--timeout", "2s")
    assert table.returncode == 1
    lines = table.stdout.splitlines()
    # Not a terminal: one line per row, the ids whole; a down node's flush is "-".
    [row3] = [line for line in lines if f"3 {cluster[3].http_url}" in line]
    assert str(TTID.tenant_id) in row3
    assert str(TTID.timeline_id) in row3
    assert f"{(int(end) - int(DEFAULT_START_LSN)) / MiB:.1f} MiB" in row3
    [row2] = [line for line in lines if f"? {cluster[2].http_url}" in line]
    assert " down " in row2
    assert "None" not in table.stdout
    assert sum(f"node down: {cluster[2].http_url}" in line for line in lines) == 1
    assert Lsn.parse(str(views[cluster[1].http_url]["commit_lsn"])) == end


@pytest.mark.slow
async def test_recovery_trigger_and_cancel_commands(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(1)
    await cluster.start()
    await cluster.create_timeline(TTID)
    node = ["--node", cluster[1].http_url]
    triggered = await run_cli("recovery", "trigger", *node, *IDS)
    assert triggered.returncode == 0, triggered.stderr
    assert json.loads(triggered.stdout) == {"recovery": "triggered", "timeline": str(TTID)}
    cancelled = await run_cli("recovery", "cancel", *node, *IDS)
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["recovery"] == "cancelled"
    unknown = await run_cli("recovery", "trigger", *node, "--tenant-id", "ab" * 16,
                            "--timeline-id", "cd" * 16)
    assert unknown.returncode == 1
    [line] = unknown.stderr.splitlines()
    assert line.startswith(f"Error: {cluster[1].http_url}: HTTP 404: ")
    assert line.endswith("no such timeline on this node, or the node runs with --no-recovery "
                         "(then its sidecar recovers it)")
