"""``safekeeper-recovery verify`` exit codes when it cannot read the WAL (2) or is misused.

The real-process run (valid WAL exits 0, a flipped byte exits 1 with its record's LSN) is
``tests/integration/test_verify.py``.
"""

from __future__ import annotations

import socket
from pathlib import Path

from click.testing import CliRunner

from safekeeper_recovery.cli import main

IDS = ["--tenant-id", "7" * 32, "--timeline-id", "e" * 32]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_an_unreachable_node_exits_2() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = CliRunner().invoke(main, ["verify", "--node", url, *IDS, "--timeout", "2"])
    assert result.exit_code == 2, result.output
    assert "Error:" in result.output
    assert url in result.output


def test_a_data_dir_without_the_timeline_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["verify", "--data-dir", str(tmp_path), *IDS])
    assert result.exit_code == 2, result.output
    assert "no timeline directory" in result.output


def test_node_and_data_dir_together_are_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["verify", "--data-dir", str(tmp_path), "--node", "http://x", *IDS]
    )
    assert result.exit_code == 2
    assert "exactly one of --node and --data-dir" in result.output


def test_a_bad_timeline_id_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["verify", "--data-dir", str(tmp_path), "--tenant-id", "xyz", "--timeline-id",
               "e" * 32]
    )
    assert result.exit_code == 2
