"""``timeline create|status|delete`` against a real node, printing JSON."""

from __future__ import annotations

import json

import pytest

from safekeeper_recovery.testing import run_cli

from .conftest import ClusterFactory

IDS = ["--tenant-id", "f" * 32, "--timeline-id", "1" * 32]


@pytest.mark.slow
async def test_timeline_create_status_delete(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(1)
    await cluster.start()
    node = ["--node", cluster[1].http_url]
    created = await run_cli(
        "timeline", "create", *node, *IDS, "--start-lsn", "0/2000000", "--wal-seg-size", "2MiB"
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["flush_lsn"] == "0/2000000"
    status = await run_cli("timeline", "status", *node, *IDS)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["commit_lsn"] == "0/2000000"
    conflict = await run_cli("timeline", "create", *node, *IDS, "--start-lsn", "0/3000000")
    assert conflict.returncode == 1
    assert "409" in conflict.stderr
    deleted = await run_cli("timeline", "delete", *node, *IDS)
    assert deleted.returncode == 0, deleted.stderr
    missing = await run_cli("timeline", "status", *node, *IDS)
    assert missing.returncode == 1
    assert "404" in missing.stderr
    bad = await run_cli("timeline", "status", *node, "--tenant-id", "../x", "--timeline-id", "1")
    assert bad.returncode == 2
