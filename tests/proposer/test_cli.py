"""``safekeeper-recovery propose``: options, failures, and a real run in a subprocess."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import trio
from click.testing import CliRunner

from safekeeper_recovery.cli import main

from ._fakes import TENANT, TIMELINE
from .test_real_sockets import make_nodes

IDS = ["--tenant-id", str(TENANT), "--timeline-id", str(TIMELINE)]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_bad_size_is_a_usage_error() -> None:
    result = CliRunner().invoke(
        main, ["propose", "--safekeepers", "ws://127.0.0.1:1", *IDS, "--bytes", "12 parsecs"]
    )
    assert result.exit_code == 2
    assert "expected a size like 16MiB" in result.output


def test_unreachable_safekeepers_fail_with_a_clear_message() -> None:
    urls = ",".join(f"ws://127.0.0.1:{closed_port()}" for _ in range(3))
    result = CliRunner().invoke(
        main, ["propose", "--safekeepers", urls, *IDS, "--bytes", "1MiB", "--connect-timeout", "2"]
    )
    assert result.exit_code == 1
    assert "Error: lost quorum: 0 of 3 safekeepers reachable, need 2" in result.output


async def test_propose_writes_and_prints_a_summary(nursery: trio.Nursery, tmp_path: Path) -> None:
    nodes = await make_nodes(nursery, tmp_path)
    urls = ",".join(n.url for n in nodes)
    code = "from safekeeper_recovery.cli import main; main()"
    args = [sys.executable, "-c", code, "propose", "--safekeepers", urls, *IDS]
    with trio.fail_after(60):
        done = await trio.run_process(
            [*args, "--bytes", "2MiB", "--seed", "3", "--wal-seg-size", "1MiB", "--no-progress"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    assert out.count("\n") == 1
    assert out.startswith("term 1: wrote 2097152 bytes")
    for node in nodes:
        assert node.timeline.snapshot().flush_lsn == 0x100_0000 + 2 * 1024 * 1024
