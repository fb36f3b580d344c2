"""Benchmarks: recovery and ingest throughput against ``pg_receivewal`` and the disk,
latency, idle cost at scale, memory. Run with ``safekeeper-recovery bench``."""

from ._archive import (
    ARCHIVE_SEG_SIZE,
    REMOVAL_GRACE,
    ArchiveFigures,
    ArchiveRun,
    DiskSample,
    archive_round,
    run_archive,
    run_plain_ingest,
)
from ._cluster import (
    UNTHROTTLED,
    BenchCluster,
    IngestRun,
    LatencyTrial,
    RecoveryRun,
    cpu_seconds,
    peak_rss,
    rss,
)
from ._compare import Earlier, change, earlier_figures
from ._disk import SEGMENT_SIZE, WRITE_BYTES, DiskRun, write_segments
from ._idle import IdleResult, measure_idle
from ._live import TimedWal
from ._mass import MassRun, MassScale, measure_mass, percentile
from ._postgres import PostgresServer, find_bindir
from ._report import figures, kept_sections, load_line, render_markdown, render_table, targets
from ._run import QUICK_MASS_SCALES, BenchConfig, BenchResults, run_benchmarks
from ._stats import Samples, ratio

__all__ = [
    "ARCHIVE_SEG_SIZE",
    "ArchiveFigures",
    "ArchiveRun",
    "BenchCluster",
    "BenchConfig",
    "BenchResults",
    "DiskRun",
    "DiskSample",
    "Earlier",
    "IdleResult",
    "IngestRun",
    "LatencyTrial",
    "MassRun",
    "MassScale",
    "PostgresServer",
    "QUICK_MASS_SCALES",
    "REMOVAL_GRACE",
    "RecoveryRun",
    "SEGMENT_SIZE",
    "Samples",
    "TimedWal",
    "UNTHROTTLED",
    "WRITE_BYTES",
    "archive_round",
    "change",
    "cpu_seconds",
    "earlier_figures",
    "figures",
    "find_bindir",
    "kept_sections",
    "load_line",
    "measure_idle",
    "measure_mass",
    "peak_rss",
    "percentile",
    "ratio",
    "render_markdown",
    "render_table",
    "rss",
    "run_archive",
    "run_benchmarks",
    "run_plain_ingest",
    "targets",
    "write_segments",
]
