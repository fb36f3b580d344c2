"""One node per data directory: a second ``serve`` on a running node's directory refuses,
naming the holder's pid and the lock file, and touches nothing; a SIGKILLed node's lock
file does not block its restart; a clean exit empties it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safekeeper_recovery.node import LOCK_FILE_NAME
from safekeeper_recovery.testing import ProcessResult, allocate_ports, make_ttid, start_cli

from .conftest import ClusterFactory
from .recovery_support import propose_args

TTID = make_ttid(0xC, tenant=4)


def layout(data_dir: Path) -> dict[str, int]:
    """Every file under ``data_dir`` and its size. A running idle node may rewrite its
    control file in place of itself (same name, same size), nothing more; a second node
    opening the timelines would settle, truncate or create files."""
    return {
        str(Path(root, name).relative_to(data_dir)): Path(root, name).stat().st_size
        for root, _, names in os.walk(data_dir) for name in names
    }


async def second_serve(work_dir: Path, data_dir: Path, ports: list[int], name: str
                       ) -> ProcessResult:
    """``serve`` on ``data_dir``; it must exit by itself (a node that starts never does)."""
    ready = work_dir / f"{name}.ready.json"
    run = await start_cli(
        work_dir, name, "serve", "--node-id", "9", "--data-dir", str(data_dir),
        "--listen-http", f"127.0.0.1:{ports[0]}", "--listen-wal", f"127.0.0.1:{ports[1]}",
        "--ready-file", str(ready), "--log-format", "json",
    )
    try:
        result = await run.wait(timeout=20)
    finally:
        run.kill()
    assert not ready.exists()
    return result


@pytest.mark.slow
async def test_a_second_serve_on_a_running_nodes_data_dir_refuses_and_touches_nothing(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(1)
    node = cluster[1]
    await cluster.start()
    await cluster.create_timeline(TTID)
    proposed = await cluster.propose(*propose_args(cluster, TTID, "2MiB"))
    assert proposed.returncode == 0, proposed.stderr
    lock_file = node.data_dir / LOCK_FILE_NAME
    assert node.process is not None
    assert lock_file.read_text() == f"{node.process.pid}\n"
    before, lock_stat = layout(node.data_dir), lock_file.stat()

    # Other ports, then the node's own ports: the lock is taken before the ports are tried.
    for name, ports in (("other-ports", allocate_ports(2)),
                        ("same-ports", [node.http_port, node.wal_port])):
        refused = await second_serve(cluster.work_dir, node.data_dir, ports, name)
        assert refused.returncode == 1, refused.stderr
        errors = [line for line in refused.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, refused.stderr
        assert f"in use by process {node.process.pid}" in errors[0]
        assert str(lock_file) in errors[0]
        assert "Traceback" not in refused.stderr
    assert layout(node.data_dir) == before
    assert lock_file.stat().st_mtime_ns == lock_stat.st_mtime_ns
    async with node.client() as client:  # the first node goes on
        assert (await client.timeline_status(TTID))["flush_lsn"]

    # SIGKILL leaves the file and its pid, but the kernel dropped the lock with the process.
    killed_pid = node.process.pid
    await node.kill()
    assert lock_file.read_text() == f"{killed_pid}\n"
    await node.start()
    assert lock_file.read_text() == f"{node.process.pid}\n"
    await node.terminate()
    assert lock_file.read_text() == ""  # a clean exit: nobody runs here
