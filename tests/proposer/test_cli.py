"""``safekeeper-recovery propose``: options, failures, and a real run in a subprocess."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import trio
import trio.testing
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


def test_rate_must_be_positive_and_is_for_generated_wal_only() -> None:
    base = ["propose", "--safekeepers", "ws://127.0.0.1:1", *IDS]
    zero = CliRunner().invoke(main, [*base, "--rate", "0"])
    assert zero.exit_code == 2
    assert "Invalid value for --rate: must be above 0" in zero.output
    with_pg = CliRunner().invoke(main, [*base, "--rate", "8MiB", "--from-postgres", "host=x"])
    assert with_pg.exit_code == 2
    assert "--rate shape generated WAL and cannot be used with --from-postgres" in with_pg.output


async def test_paced_wal_is_released_over_bytes_over_rate_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """PacedWal: 64 KiB at 256 KiB/s is released over 0.25 s, in 0.1 s steps (a mock
    clock: on a loaded machine a real sleep may oversleep a whole step)."""
    from safekeeper_recovery.core import Lsn
    from safekeeper_recovery.proposer import PacedWal, WalGenerator

    source = PacedWal(WalGenerator(1, 64 * 1024), Lsn(0x100_0000), 256 * 1024)
    seen: list[tuple[float, Lsn]] = []
    t0 = trio.current_time()
    with trio.fail_after(5):
        await source.run(lambda: seen.append((trio.current_time() - t0, source.available)))
    assert source.available == source.final_end == Lsn(0x100_0000 + 64 * 1024)
    assert [int(lsn) - 0x100_0000 for _, lsn in seen] == [26214, 52428, 64 * 1024]
    assert [round(t, 3) for t, _ in seen] == [0.1, 0.2, 0.3]
    head = source.read_wal(Lsn(0x100_0000), Lsn(0x100_0010))
    assert head == WalGenerator(1, 64 * 1024).read(0, 16)


async def test_a_refusal_with_a_rule_code_says_where_the_code_is_explained(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    nodes = await make_nodes(nursery, tmp_path)  # timelines of 1 MiB segments
    urls = ",".join(n.url for n in nodes)
    code = "from safekeeper_recovery.cli import main; main()"
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-c", code, "propose", "--safekeepers", urls, *IDS,
             "--bytes", "1MiB", "--wal-seg-size", "2MiB", "--no-progress"],
            capture_stdout=True, capture_stderr=True, check=False,
        )
    assert done.returncode == 1, done.stderr.decode()
    [line] = [ln for ln in done.stderr.decode().splitlines() if ln.startswith("Error: ")]
    assert "R1: greeting wal_seg_size 2097152 differs" in line
    assert line.endswith("(see docs/errors.md#r1)"), line
