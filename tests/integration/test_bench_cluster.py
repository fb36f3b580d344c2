"""The benchmark's cluster on real processes, small: recovery and ingest runs report their
time and the CPU of every process involved, and the report shows the CPU figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from safekeeper_recovery.bench import BenchCluster, BenchConfig, BenchResults, render_markdown
from safekeeper_recovery.testing import MiB


@pytest.mark.slow
async def test_recovery_and_ingest_runs_report_time_and_cpu(tmp_path: Path) -> None:
    bench = BenchCluster.plan(tmp_path)
    try:
        await bench.setup(32 * MiB, 2 * MiB)
        run = await bench.recover(bench.main)
        assert run.bytes == 32 * MiB
        assert 0 < run.seconds <= run.seconds_from_start
        assert run.recipient_cpu > 0  # moving 32 MiB through Python takes ticks
        assert run.donor_cpu >= 0
        assert run.peak_rss > 0

        ingest = await bench.ingest(32 * MiB)
        assert ingest.seconds > 0
        assert ingest.proposer_cpu > 0
        assert len(ingest.node_cpu) == 3
        assert all(cpu > 0 for cpu in ingest.node_cpu), ingest.node_cpu
    finally:
        await bench.stop()

    results = BenchResults(BenchConfig(nbytes=32 * MiB, rounds=1))
    gib = run.bytes / 2**30
    results.cpu_recipient.add(run.recipient_cpu / gib)
    results.cpu_donor.add(run.donor_cpu / gib)
    report = render_markdown(results, "test")
    assert f"| CPU, recovering node | {run.recipient_cpu / gib:.2f} | s/GiB |" in report
    assert "| CPU, ingest proposer | n/a | s/GiB |" in report
