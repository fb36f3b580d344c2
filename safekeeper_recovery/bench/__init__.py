"""Benchmarks: recovery and ingest throughput against ``pg_receivewal`` and the disk,
latency, idle cost at scale, memory. Run with ``safekeeper-recovery bench``."""

from ._archive import (
    ARCHIVE_SEG_SIZE,
    ArchiveFigures,
    ArchiveRun,
    DiskSample,
    archive_round,
    run_archive,
    run_plain_ingest,
)
from ._cluster import BenchCluster, IngestRun, LatencyTrial, RecoveryRun, cpu_seconds, peak_rss, rss
from ._disk import SEGMENT_SIZE, write_segments
from ._idle import IdleResult, measure_idle
from ._postgres import PostgresServer, find_bindir
from ._report import figures, kept_sections, render_markdown, render_table, targets
from ._run import BenchConfig, BenchResults, run_benchmarks
from ._stats import Samples, ratio

__all__ = [
    "ARCHIVE_SEG_SIZE",
    "SEGMENT_SIZE",
    "ArchiveFigures",
    "ArchiveRun",
    "BenchCluster",
    "BenchConfig",
    "BenchResults",
    "DiskSample",
    "IdleResult",
    "IngestRun",
    "LatencyTrial",
    "PostgresServer",
    "RecoveryRun",
    "Samples",
    "cpu_seconds",
    "figures",
    "kept_sections",
    "find_bindir",
    "measure_idle",
    "peak_rss",
    "ratio",
    "render_markdown",
    "render_table",
    "archive_round",
    "rss",
    "run_archive",
    "run_benchmarks",
    "run_plain_ingest",
    "targets",
    "write_segments",
]
