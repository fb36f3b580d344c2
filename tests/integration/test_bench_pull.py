"""The benchmark's pull figure on real processes, small: node 3 pulls the timeline it
just recovered, from an empty disk, and the report compares the two."""

from __future__ import annotations

from pathlib import Path

import pytest

from safekeeper_recovery.bench import BenchCluster, BenchConfig, BenchResults, render_markdown
from safekeeper_recovery.bench._pull import measure_pull
from safekeeper_recovery.testing import MiB


@pytest.mark.slow
async def test_pull_run_reports_its_bytes_and_time_beside_recovery(tmp_path: Path) -> None:
    bench = BenchCluster.plan(tmp_path)
    try:
        await bench.setup(16 * MiB, 1 * MiB)
        recovered = await bench.recover(bench.main)
        pulled = await measure_pull(bench, bench.main)
    finally:
        await bench.stop()
    assert pulled.bytes == recovered.bytes == 16 * MiB
    assert pulled.seconds > 0
    assert pulled.attempts == 1
    results = BenchResults(BenchConfig(nbytes=16 * MiB, rounds=1))
    results.recovery.add(recovered.bytes / 1e6 / recovered.seconds)
    results.pull.add(pulled.bytes / 1e6 / pulled.seconds)
    report = render_markdown(results, "test")
    expected = (pulled.bytes / pulled.seconds) / (recovered.bytes / recovered.seconds)
    assert f"| pull ÷ recovery ≥ 0.8 | {expected:.2f} |" in report, report
