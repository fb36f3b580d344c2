"""Per-node Prometheus metrics: low-cardinality, no per-timeline labels.

Each node owns its own :class:`prometheus_client.CollectorRegistry` (never the global one),
so several nodes can live in one process (tests, simulations) without clashing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ..storage import DiskUsage, recent_wal_budget

__all__ = ["METRICS_CONTENT_TYPE", "PULL_OUTCOMES", "RECOVERY_OUTCOMES", "NodeMetrics",
           "PgConsumerSample"]

PgConsumerSample = tuple[bool, int]
"""One consumer at scrape time: (connected, lag bytes behind its timeline's commit_lsn)."""

METRICS_CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

PULL_OUTCOMES: Final = ("done", "donor_error", "error", "in_progress", "invalid", "no_donor",
                         "term_changed")
"""Outcomes of one pull attempt (``safekeeper_pull_attempts_total{outcome=…}``)."""
RECOVERY_OUTCOMES: Final = (
    "caught_up",
    "cancelled",
    "donor_busy",
    "donor_error",
    "error",
    "no_common_point",
    "proposer_arrived",
    "term_changed",
    "timeout",
)
"""Outcomes pre-declared so that rates exist (as 0) before the first attempt; the error
outcomes are the ``outcome`` attributes of ``core.RecoveryError`` subclasses."""


class NodeMetrics:
    """The metrics of one node. Writers update the public instruments directly:

    * ``timelines`` / ``broken_timelines`` (gauges): refreshed by the HTTP app on each scrape
      (:meth:`set_timeline_counts`).
    * ``wal_received_bytes`` / ``wal_flushes`` (counters): the WAL receive path.
    * ``recovery_attempts`` (counter, label ``outcome``), ``recovery_bytes`` (counter),
      ``active_recoveries`` and ``recovery_lag_bytes`` (gauges, node totals): the recovery
      engine.
    * ``archive_uploads`` / ``archive_upload_bytes`` / ``archive_failures`` (label
      ``kind``) / ``wal_removed_segments`` / ``wal_removed_bytes`` (counters): the WAL
      lifecycle.
    * ``pg_streams`` (gauge) / ``pg_sent_bytes`` (counter): the PostgreSQL replication
      port; ``pg_consumers`` (gauge, label ``state``: ``connected`` or ``held``, a
      disconnected consumer still holding WAL) and ``pg_consumer_max_lag_bytes`` (gauge:
      the largest ``commit_lsn`` - consumer position on the node), read at scrape time
      from the source given to :meth:`track_pg_consumers` (the per-consumer positions are
      in the timeline status).
    * ``pull_attempts`` (label ``outcome``: one of :data:`PULL_OUTCOMES`) / ``pull_bytes``
      (counters), ``pulls_active`` (gauge), ``snapshot_sent_bytes`` (counter, the
      donor's side): timeline pulls.
    * ``disk_size_bytes`` / ``disk_used_bytes`` / ``disk_limit_bytes`` /
      ``disk_guard_refusing`` (gauges, the data directory's file system, from the disk
      guard's last measurement), ``disk_guard_refused_appends`` (counter) and
      ``wal_disk_bytes`` (gauge, every timeline's WAL files, set by the node at scrape).
    * ``wal_memory_bytes`` / ``wal_memory_limit_bytes`` (gauges) and
      ``wal_read_bytes`` (counter, label ``source``: ``memory`` or ``disk``): the newest
      WAL kept in memory for readers at the live end (``storage/_recent_wal.py``), read at
      scrape time from the process-wide budget.
    """

    def __init__(self, prefix: str = "safekeeper") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.timelines = Gauge(
            f"{prefix}_timelines", "Timelines on this node, broken ones included", registry=r
        )
        self.broken_timelines = Gauge(
            f"{prefix}_broken_timelines",
            "Timelines that failed to load or stopped (storage failure, fatal error)",
            registry=r,
        )
        self.wal_received_bytes = Counter(
            f"{prefix}_wal_received_bytes", "WAL bytes received from proposers and donors",
            registry=r,
        )
        self.wal_flushes = Counter(f"{prefix}_wal_flushes", "WAL fsyncs", registry=r)
        self.recovery_attempts = Counter(
            f"{prefix}_recovery_attempts", "Peer-recovery attempts by outcome", ["outcome"],
            registry=r,
        )
        for outcome in RECOVERY_OUTCOMES:
            self.recovery_attempts.labels(outcome=outcome)
        self.recovery_bytes = Counter(
            f"{prefix}_recovery_bytes", "WAL bytes pulled from donors by peer recovery",
            registry=r,
        )
        self.active_recoveries = Gauge(
            f"{prefix}_recoveries_active", "Peer recoveries running now", registry=r
        )
        self.recovery_lag_bytes = Gauge(
            f"{prefix}_recovery_lag_bytes",
            "Sum over recovering timelines of (donor flush_lsn - local flush_lsn)",
            registry=r,
        )

        self.archive_uploads = Counter(
            f"{prefix}_archive_uploads", "WAL segments uploaded to the archive and verified",
            registry=r,
        )
        self.archive_upload_bytes = Counter(
            f"{prefix}_archive_upload_bytes", "WAL bytes uploaded to the archive and verified",
            registry=r,
        )
        self.archive_failures = Counter(
            f"{prefix}_archive_failures",
            "Failed WAL lifecycle steps by kind (unreachable, timeout, auth, no_bucket, "
            "corrupt, server, io, storage, error)", ["kind"], registry=r,
        )
        self.wal_removed_segments = Counter(
            f"{prefix}_wal_removed_segments",
            "WAL segment files removed below the removal horizon", registry=r,
        )
        self.pg_streams = Gauge(
            f"{prefix}_pg_streams", "START_REPLICATION streams running on the pg port",
            registry=r,
        )
        self.pg_sent_bytes = Counter(
            f"{prefix}_pg_sent_bytes", "WAL bytes sent to PostgreSQL replication clients",
            registry=r,
        )
        self._prefix = prefix
        self._consumers: Callable[[], Iterable[PgConsumerSample]] | None = None
        r.register(_ConsumerCollector(self))
        self.pull_attempts = Counter(
            f"{prefix}_pull_attempts",
            "Timeline pull attempts (bootstrap from a peer) by outcome", ["outcome"],
            registry=r,
        )
        for outcome in PULL_OUTCOMES:
            self.pull_attempts.labels(outcome=outcome)
        self.pull_bytes = Counter(
            f"{prefix}_pull_bytes", "WAL bytes received in timeline snapshots (pulls)",
            registry=r,
        )
        self.pulls_active = Gauge(
            f"{prefix}_pulls_active", "Timeline pulls running on this node now", registry=r
        )
        self.snapshot_sent_bytes = Counter(
            f"{prefix}_snapshot_sent_bytes", "WAL bytes sent in snapshots to pulling peers",
            registry=r,
        )

        self.wal_removed_bytes = Counter(
            f"{prefix}_wal_removed_bytes",
            "Bytes of WAL segment files removed below the removal horizon", registry=r,
        )
        self.disk_size_bytes = Gauge(
            f"{prefix}_disk_size_bytes", "Size of the data directory's file system",
            registry=r,
        )
        self.disk_used_bytes = Gauge(
            f"{prefix}_disk_used_bytes",
            "Bytes of the data directory's file system this node cannot write any more",
            registry=r,
        )
        self.disk_limit_bytes = Gauge(
            f"{prefix}_disk_limit_bytes",
            "--max-disk-usage in bytes (-1: no limit)", registry=r,
        )
        self.disk_guard_refusing = Gauge(
            f"{prefix}_disk_guard_refusing",
            "1 while new WAL is refused because the disk is past --max-disk-usage",
            registry=r,
        )
        self.disk_guard_refused_appends = Counter(
            f"{prefix}_disk_guard_refused_appends",
            "Appends refused because the disk was past --max-disk-usage", registry=r,
        )
        self.wal_disk_bytes = Gauge(
            f"{prefix}_wal_disk_bytes",
            "Bytes of WAL segment files of every timeline on this node", registry=r,
        )
        r.register(_RecentWalCollector(prefix))

    # Method forms, so that NodeMetrics satisfies the recovery engine's RecoveryMetrics
    # and the WAL lifecycle's LifecycleObserver.

    def archive_uploaded(self, nbytes: int) -> None:
        self.archive_uploads.inc()
        self.archive_upload_bytes.inc(nbytes)

    def archive_failed(self, kind: str) -> None:
        self.archive_failures.labels(kind=kind).inc()

    def wal_segments_removed(self, n: int, nbytes: int) -> None:
        self.wal_removed_segments.inc(n)
        self.wal_removed_bytes.inc(nbytes)

    def disk_measured(self, usage: DiskUsage, limit_bytes: int | None, refusing: bool) -> None:
        self.disk_size_bytes.set(usage.size)
        self.disk_used_bytes.set(usage.used)
        self.disk_limit_bytes.set(-1 if limit_bytes is None else limit_bytes)
        self.disk_guard_refusing.set(1 if refusing else 0)

    def appends_refused(self) -> None:
        self.disk_guard_refused_appends.inc()

    def pull_finished(self, outcome: str) -> None:
        self.pull_attempts.labels(outcome=outcome).inc()

    def attempt_finished(self, outcome: str) -> None:
        self.recovery_attempts.labels(outcome=outcome).inc()

    def bytes_received(self, n: int) -> None:
        self.recovery_bytes.inc(n)

    def wal_written(self, n: int) -> None:
        self.wal_received_bytes.inc(n)

    def wal_flushed(self) -> None:
        self.wal_flushes.inc()

    def set_timeline_counts(self, timelines: int, broken: int) -> None:
        self.timelines.set(timelines)
        self.broken_timelines.set(broken)

    def pg_stream_started(self) -> None:
        self.pg_streams.inc()

    def pg_stream_ended(self) -> None:
        self.pg_streams.dec()

    def pg_wal_sent(self, nbytes: int) -> None:
        self.pg_sent_bytes.inc(nbytes)

    def track_pg_consumers(self, source: Callable[[], Iterable[PgConsumerSample]]) -> None:
        """Report ``source()`` (read at each scrape) as the per-consumer gauges."""
        self._consumers = source

    def render(self) -> bytes:
        """The Prometheus text exposition of this node's registry."""
        return generate_latest(self.registry)


class _RecentWalCollector(Collector):
    """The recent-WAL gauges and read counter of :class:`NodeMetrics`, from the
    process-wide budget at scrape time."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    def collect(self) -> Iterator[Metric]:
        budget = recent_wal_budget
        yield GaugeMetricFamily(f"{self._prefix}_wal_memory_bytes",
                                "Newest WAL held in memory for readers at the live end",
                                value=budget.used)
        yield GaugeMetricFamily(f"{self._prefix}_wal_memory_limit_bytes",
                                "--wal-memory: the most WAL held in memory, all timelines together",
                                value=budget.limit)
        reads = CounterMetricFamily(f"{self._prefix}_wal_read_bytes",
                                    "WAL bytes read by WAL senders and archive uploads, by source "
                                    "(memory: the newest WAL held; disk)", labels=["source"])
        reads.add_metric(["memory"], budget.read_from_memory_bytes)
        reads.add_metric(["disk"], budget.read_from_disk_bytes)
        yield reads

    def describe(self) -> Iterator[Metric]:
        return iter(())


class _ConsumerCollector(Collector):
    """The pg consumer gauges of :class:`NodeMetrics`, computed at scrape time."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        prefix = self._metrics._prefix
        samples = list(self._metrics._consumers() if self._metrics._consumers else ())
        count = GaugeMetricFamily(
            f"{prefix}_pg_consumers",
            "PostgreSQL replication consumers known: connected, or gone but still holding WAL",
            labels=["state"],
        )
        count.add_metric(["connected"], sum(1 for connected, _ in samples if connected))
        count.add_metric(["held"], sum(1 for connected, _ in samples if not connected))
        yield count
        yield GaugeMetricFamily(
            f"{prefix}_pg_consumer_max_lag_bytes",
            "Largest distance from a timeline's commit_lsn to one of its consumers' position",
            value=max((lag for _, lag in samples), default=0),
        )

    def describe(self) -> Iterator[Metric]:
        return iter(())
