"""``safekeeper-recovery demo --postgres``: the failover demo runs to its end, says what it
does at each step, and exits 0 with every acknowledged transaction on the promoted
standby (the counts it prints are the demo's own evidence, checked here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from safekeeper_recovery.cli import main
from safekeeper_recovery.demo._failover import PGBENCH_CLIENTS
from safekeeper_recovery.testing import CLI


@pytest.mark.slow
async def test_demo_postgres_loses_no_acknowledged_transaction(pg_bindir: Path) -> None:
    with trio.fail_after(280):
        done = await trio.run_process([*CLI, "demo", "--postgres", "--load-time", "2s"],
                                      capture_stdout=True, capture_stderr=True, check=False)
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, out[-5000:]
    steps = [
        "Starting 3 nodes",
        "synchronous_standby_names = 'safekeeper_recovery'",
        "it is the primary's synchronous standby",
        "streams from the safekeepers (host=127.0.0.1,127.0.0.1,127.0.0.1 port=",
        "kill -9 of the primary",
        "sync: term 2, everything a quorum holds is committed at ",
        "promoting it",
        "every acknowledged transaction is there",
        "Removed ",
    ]
    at = [out.find(step) for step in steps]
    assert all(i >= 0 for i in at), [s for s, i in zip(steps, at, strict=True) if i < 0]
    assert at == sorted(at), "steps out of order"
    # Not a terminal: one table row per line, "name │ acknowledged │ on the standby".
    for name in ("counting client", "pgbench"):
        [row] = [line for line in out.splitlines() if line.strip("│ ").startswith(name)]
        acked, held = (int(n) for n in re.findall(r"\d+", row))
        assert acked > 0, row  # the load committed something
        in_flight = 1 if name == "counting client" else PGBENCH_CLIENTS  # Z2
        assert acked <= held <= acked + in_flight, row
    assert "Traceback" not in out


@pytest.mark.parametrize(("args", "message"), [
    (["--postgres", "--bytes", "1MiB"], "--bytes is for the recovery demo, not --postgres"),
    (["--load-time", "5s"], "--load-time needs --postgres"),
])
def test_an_option_of_the_other_demo_is_a_usage_error(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["demo", *args])
    assert result.exit_code == 2
    assert message in result.output
