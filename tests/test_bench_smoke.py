"""Smoke tests of the benchmark's parts (the full run is `nox -s bench`); one runs a mass
recovery at a tiny scale with real node processes."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing
from rich.console import Console

from safekeeper_recovery.bench import (
    BenchConfig,
    BenchResults,
    MassScale,
    Samples,
    TimedWal,
    cpu_seconds,
    earlier_figures,
    figures,
    kept_sections,
    measure_mass,
    percentile,
    ratio,
    render_markdown,
    targets,
    write_segments,
)
from safekeeper_recovery.bench._postgres import _run_timed, evict_from_page_cache
from safekeeper_recovery.cli._bench import REPORT, report_path
from safekeeper_recovery.core import Lsn
from safekeeper_recovery.proposer import WalGenerator


def _direct_io_works(directory: Path) -> bool:
    try:
        fd = os.open(directory / "probe", os.O_RDWR | os.O_CREAT | os.O_DIRECT)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        return False
    os.close(fd)
    os.unlink(directory / "probe")
    return True


def test_disk_limit_writes_like_the_node_and_says_how(tmp_path: Path) -> None:
    run = write_segments(tmp_path / "disk", 3 * 1024 * 1024 + 100,
                         segment_size=2 * 1024 * 1024, write_bytes=1024 * 1024)
    assert run.seconds > 0
    assert not (tmp_path / "disk").exists()
    expected = "O_DIRECT" if _direct_io_works(tmp_path) else "buffered (O_DIRECT refused"
    assert run.mode.startswith(expected), run.mode
    assert "1 MiB writes" in run.mode
    assert "2 MiB segments" in run.mode
    with pytest.raises(ValueError, match="page size"):
        write_segments(tmp_path / "disk", 4096, segment_size=1000)


def _resident_bytes(path: Path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux's fincore")
def test_the_walsender_from_disk_figure_evicts_the_wal_from_the_page_cache(
        tmp_path: Path) -> None:
    wal = tmp_path / "pg_wal"
    (wal / "archive_status").mkdir(parents=True)
    segments = [wal / "000000010000000000000001", wal / "archive_status" / "x.done"]
    for path in segments:
        with path.open("wb") as f:
            f.write(os.urandom(1 << 20))
            f.flush()
            os.fsync(f.fileno())  # clean pages: what make_wal leaves (PostgreSQL flushed)
    if _resident_bytes(segments[0]) == 0:
        pytest.skip("this file system keeps no page cache for the file (e.g. tmpfs)")
    assert evict_from_page_cache(wal) == 2
    assert [_resident_bytes(p) for p in segments] == [0, 0]


def test_a_child_is_timed_with_its_own_cpu() -> None:
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    seconds, cpu, code, _ = _run_timed([sys.executable, "-c", spin])
    assert code == 0
    assert 0.3 <= cpu <= seconds + 0.05
    _, _, code, err = _run_timed([sys.executable, "-c", "import sys; sys.exit('no')"])
    assert code == 1
    assert "no" in err


def test_a_quick_run_writes_no_report_unless_asked() -> None:
    assert report_path(quick=True, output=None) is None
    assert report_path(quick=False, output=None) == REPORT
    assert report_path(quick=True, output=Path("x.md")) == Path("x.md")
    assert report_path(quick=False, output=Path("-")) is None


async def test_live_wal_times_each_piece_from_release_to_commit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    wal = TimedWal(WalGenerator(1, 4 * 100), Lsn(1000), piece=100, interval=1.0)
    notified = 0

    def notify() -> None:
        nonlocal notified
        notified += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wal.run, notify)
        await trio.sleep(2.5)  # mock clock: pieces released at 1 and 2
        assert wal.available == Lsn(1200)
        wal.committed(Lsn(1150))  # only the first piece is wholly committed
        await trio.sleep(1.0)
        wal.committed(Lsn(1400))  # the second and third (released at 3); the fourth is not out
        assert wal.latencies() == [1.5, 1.5, 0.5]
    assert notified == 4  # run returned: everything released (at 4)
    await trio.sleep(0.25)
    wal.committed(Lsn(1400))
    assert wal.latencies() == [1.5, 1.5, 0.5, 0.25]
    assert wal.latencies(since=1.5, until=3.0) == [1.5]
    assert wal.read_wal(Lsn(1100), Lsn(1200)) == WalGenerator(1, 400).read(100, 100)


def test_percentile_is_the_nearest_rank() -> None:
    values = tuple(float(v) for v in range(1, 101))
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile((), 50) != percentile((), 50)  # nan


def test_a_report_carries_the_earlier_runs_figures_and_their_change() -> None:
    first = BenchResults(BenchConfig())
    first.recovery.values.extend([400.0, 500.0, 450.0])
    first.load.append(("start", (0.5, 0.4, 0.3)))
    earlier = render_markdown(first, "bench")
    parsed = earlier_figures(earlier)
    assert parsed.values["recovery"] == "450.0 (400.0-500.0)"
    assert parsed.load == "start 0.50 0.40 0.30"
    second = BenchResults(BenchConfig())
    second.recovery.values.extend([900.0, 880.0, 910.0])
    report = render_markdown(second, "bench", earlier=earlier)
    assert "| recovery | 900.0 (880.0-910.0) | MB/s | 450.0 (400.0-500.0) | 2.00x |" in report
    assert "| pg_receivewal | n/a | MB/s | n/a |  |" in report  # n/a is not compared
    # A report compares with the run it replaces only, not with that run's own earlier one.
    third = render_markdown(second, "bench", earlier=report)
    assert "| recovery | 900.0 (880.0-910.0) | MB/s | 900.0 (880.0-910.0) | 1.00x |" in third


async def test_mass_recovery_at_a_tiny_scale_catches_up_every_timeline(tmp_path: Path) -> None:
    scale = MassScale(timelines=4, lag_bytes=512 << 10, seg_size=1 << 20)
    with trio.fail_after(120):
        [run] = await measure_mass(tmp_path, scale, [None], Console(quiet=True), timeout=60.0)
    assert run.throttle is None
    assert run.total_bytes == 4 * (512 << 10)
    assert 0 < run.recovery_seconds <= run.caught_up_seconds
    assert run.peak_rss > 0
    assert run.cpu_seconds > 0
    # The live proposer kept committing before and during the recovery.
    assert run.baseline_latency
    assert run.latency
    assert max(run.latency) < 30


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


BOUND = ("WAL on disk ≤ its whole segments not archived or not on every peer 2 s earlier, "
         "through the one being written (every sample)")


def test_archive_targets_fail_on_a_slow_upload_a_sample_over_the_bound_or_a_bad_object(
) -> None:
    from safekeeper_recovery.bench import ArchiveRun, DiskSample

    results = BenchResults(BenchConfig())
    seg = 16 << 20
    run = ArchiveRun(1 << 30, seg, 4, ingest_seconds=10.0, uploaded_bytes=1 << 30,
                     upload_seconds=5.0, removed_segments=190, removal_seconds=0.5,
                     archived_segments=63, verified_segments=63)
    run.samples.append(DiskSample(1.0, 1, 3 * seg, seg, 3 * seg, 3 * seg, Lsn(seg),
                                   Lsn(4 * seg), Lsn(4 * seg)))
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
    over = DiskSample(2.0, 2, 6 * seg, seg, 5 * seg, 5 * seg, Lsn(seg), Lsn(6 * seg),
                      Lsn(6 * seg))
    slow.samples.append(over)
    slow.violations.append(over)
    results.archive.add(slow, plain_seconds=8.0)
    verdicts = {name: (value, ok) for name, value, ok in targets(results)}
    assert verdicts["archive upload ÷ ingest ≥ 1.0 (every round)"] == ("0.50", False)
    assert verdicts[BOUND] == (
        "1 of 2 over", False)
    assert verdicts["archived segments byte-identical to the WAL written"] == (
        "125 of 126", False)


def test_the_disk_bound_counts_whole_segments_from_the_hold_through_the_one_written() -> None:
    from safekeeper_recovery.bench._archive import _written_end, kept_bytes

    seg = 16 << 20
    # Hold 1 byte before the end of segment 3, one byte written into segment 6: segments
    # 3, 4, 5 and 6 are on disk (each full-size), so all four are kept.
    assert kept_bytes(Lsn(4 * seg - 1), Lsn(7 * seg), seg) == 4 * seg
    # A hold exactly at a segment start keeps nothing below it.
    assert kept_bytes(Lsn(4 * seg), Lsn(7 * seg), seg) == 3 * seg
    # The node's status: its WAL begins at segment 3 (the removal horizon) and it counts 4
    # segments through its write position: the last one it writes into is segment 6.
    lifecycle = {"removal_horizon": str(Lsn(3 * seg)), "wal_disk_bytes": 4 * seg}
    assert _written_end(lifecycle, seg) == Lsn(7 * seg)
