"""Smoke tests of the benchmark helpers that need no cluster (the full run is `nox -s bench`)."""

from __future__ import annotations

import os
from pathlib import Path

from safekeeper_recovery.bench import (
    BenchConfig,
    BenchResults,
    Samples,
    cpu_seconds,
    figures,
    kept_sections,
    ratio,
    targets,
    write_segments,
)


def test_disk_limit_writes_and_removes_segments(tmp_path: Path) -> None:
    seconds = write_segments(tmp_path / "disk", 3 * 1024 * 1024, segment_size=2 * 1024 * 1024)
    assert seconds > 0
    assert not (tmp_path / "disk").exists()


def test_samples_describe_median_and_range_and_ratios_pair_by_round() -> None:
    a = Samples("a", "MB/s", [100.0, 300.0, 200.0])
    b = Samples("b", "MB/s", [50.0, 100.0, 100.0])
    assert a.describe() == "200.0 (100.0-300.0)"
    assert ratio(a, b).values == [2.0, 3.0, 2.0]
    assert Samples("empty", "s").describe() == "n/a"


def test_cpu_seconds_of_this_process_is_non_negative() -> None:
    assert cpu_seconds(os.getpid()) >= 0


def test_a_regenerated_report_keeps_the_profile_section() -> None:
    old = "# Benchmarks\n\n| a | b |\n\n## Profile\n\nwhat limits it\n\n### Recovery\n\nx\n"
    assert kept_sections(old) == "## Profile\n\nwhat limits it\n\n### Recovery\n\nx\n"
    assert kept_sections("# Benchmarks\n\n## Targets\n") == ""
    assert kept_sections("## Profile\n\ny\n") == "## Profile\n\ny\n"


def test_memory_growth_compares_the_peaks_over_as_many_rounds_at_both_sizes() -> None:
    results = BenchResults(BenchConfig())
    results.peak_rss_small.values.extend([102.0, 126.0, 110.0])
    results.peak_rss_main.values.extend([125.0, 124.0, 126.5])
    verdicts = {name: (value, ok) for name, value, ok in targets(results)}
    assert verdicts["peak RSS at N within 10 % of N/4 (max over rounds)"] == ("1.004", True)
    assert verdicts["peak RSS recovering N ≤ 200 MiB (max over rounds)"] == ("126.5", True)
    # Memory that does grow with the WAL is still caught.
    results.peak_rss_main.values.append(150.0)
    verdicts = {name: (value, ok) for name, value, ok in targets(results)}
    assert verdicts["peak RSS at N within 10 % of N/4 (max over rounds)"] == ("1.190", False)


BOUND = ("WAL on disk ≤ not archived or not on every peer 2 s earlier + 3 segments "
         "(every sample)")


def test_archive_targets_fail_on_a_slow_upload_a_sample_over_the_bound_or_a_bad_object(
) -> None:
    from safekeeper_recovery.bench import ArchiveRun, DiskSample

    results = BenchResults(BenchConfig())
    seg = 16 << 20
    run = ArchiveRun(1 << 30, seg, 4, ingest_seconds=10.0, uploaded_bytes=1 << 30,
                     upload_seconds=5.0, removed_segments=190, removal_seconds=0.5,
                     archived_segments=63, verified_segments=63)
    run.samples.append(DiskSample(1.0, 1, 3 * seg, seg, seg, 5 * seg))
    results.archive.add(run, plain_seconds=8.0)
    verdicts = {name: (value, ok) for name, value, ok in targets(results)}
    assert verdicts["archive upload ÷ ingest ≥ 1.0 (every round)"] == ("2.00", True)
    assert verdicts[BOUND] == (
        "0 of 1 over", True)
    assert verdicts["archived segments byte-identical to the WAL written"] == ("63 of 63", True)
    rows = {name: value for name, value, _ in figures(results)}
    assert rows["ingest with ÷ without archive + removal"] == "0.80"
    assert rows["removal rate"] == "380.0"
    # An upload slower than ingest, a sample over the bound, an object that differs.
    slow = ArchiveRun(1 << 30, seg, 4, ingest_seconds=10.0, uploaded_bytes=1 << 30,
                      upload_seconds=20.0, archived_segments=63, verified_segments=62)
    over = DiskSample(2.0, 2, 6 * seg, seg, seg, 5 * seg)
    slow.samples.append(over)
    slow.violations.append(over)
    results.archive.add(slow, plain_seconds=8.0)
    verdicts = {name: (value, ok) for name, value, ok in targets(results)}
    assert verdicts["archive upload ÷ ingest ≥ 1.0 (every round)"] == ("0.50", False)
    assert verdicts[BOUND] == (
        "1 of 2 over", False)
    assert verdicts["archived segments byte-identical to the WAL written"] == (
        "125 of 126", False)
