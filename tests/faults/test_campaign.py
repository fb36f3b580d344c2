"""The CI subset of the fault campaign (docs/faults.md): three short real-network schedules,
one per family of faults, and one run with a planted fault the checks must catch.

Each schedule runs three ``serve`` nodes and the proposer in their own network namespaces
(root, ``ip``, ``nft`` and ``tc`` needed; skipped with the reason otherwise).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from safekeeper_recovery.faults import (
    CampaignConfig,
    FaultKind,
    RunResult,
    plan,
    run_schedule,
    unavailable_reason,
    write_report,
)
from safekeeper_recovery.testing import NodeProcess

pytestmark = pytest.mark.slow

DURATION = 20.0


@pytest.fixture(scope="module")
def namespaces() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"the fault campaign cannot run here: {reason}")


def leftovers(result: RunResult) -> list[str]:
    """Namespaces and links of this run that still exist (rule: clean up even on failure)."""
    mine = f"skf{result.tag}"
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return [line for line in (listed + links).splitlines() if mine in line]


@pytest.mark.usefixtures("namespaces")
@pytest.mark.parametrize(
    ("seed", "kinds"),
    [
        (1, ("partition", "one_way")),
        (2, ("pause", "kill", "proposer_restart")),
        (3, ("loss", "slow")),
    ],
    ids=["partitions", "processes", "links"],
)
async def test_a_healed_cluster_holds_every_committed_byte_and_converges(
    tmp_path: Path, seed: int, kinds: tuple[FaultKind, ...]
) -> None:
    schedule = plan(seed, duration=DURATION, kinds=kinds)
    assert set(schedule.counts()) == set(kinds), schedule
    result = await run_schedule(schedule, CampaignConfig(), tmp_path)
    report = write_report(result)
    assert result.ok, report.read_text()
    assert result.workload_bytes > 1 << 20, "the workload committed almost nothing"
    assert result.converged_after is not None
    assert (tmp_path / "timeline.png").stat().st_size > 0
    assert leftovers(result) == []


async def lose_acknowledged_wal(nodes: Mapping[int, NodeProcess]) -> None:
    """Node 2 comes back from a power loss that kept none of its last acknowledged writes:
    what acknowledging before fsync does. Its WAL reads zeros where committed WAL was."""
    node = nodes[2]
    await node.stop(kill=True)
    (segment,) = (node.work_dir / "data").rglob("000000010000000000000010*")
    with segment.open("r+b") as f:
        f.seek(64 * 1024)
        f.write(bytes(8192))
    await node.start()


@pytest.mark.usefixtures("namespaces")
async def test_a_node_that_lost_acknowledged_wal_fails_the_checks(tmp_path: Path) -> None:
    schedule = plan(4, duration=8.0, kinds=("pause",))
    config = CampaignConfig(convergence_bound=6.0)
    result = await run_schedule(schedule, config, tmp_path, tamper=lose_acknowledged_wal)
    write_report(result)
    assert [v.rule for v in result.violations] == ["C-b"], result.violations
    assert "FAILED" in (tmp_path / "report.md").read_text()
    assert leftovers(result) == []
