"""Per-node Prometheus metrics: low-cardinality, no per-timeline labels.

Each node owns its own :class:`prometheus_client.CollectorRegistry` (never the global one),
so several nodes can live in one process (tests, simulations) without clashing.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["METRICS_CONTENT_TYPE", "RECOVERY_OUTCOMES", "NodeMetrics"]

METRICS_CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

RECOVERY_OUTCOMES: Final = (
    "caught_up",
    "cancelled",
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
      ``kind``) / ``wal_removed_segments`` (counters): the WAL lifecycle.
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
            "Failed WAL lifecycle steps by kind (unreachable, auth, no_bucket, corrupt, "
            "server, io, storage, error)", ["kind"], registry=r,
        )
        self.wal_removed_segments = Counter(
            f"{prefix}_wal_removed_segments",
            "WAL segment files removed below the removal horizon", registry=r,
        )

    # Method forms, so that NodeMetrics satisfies the recovery engine's RecoveryMetrics
    # and the WAL lifecycle's LifecycleObserver.

    def archive_uploaded(self, nbytes: int) -> None:
        self.archive_uploads.inc()
        self.archive_upload_bytes.inc(nbytes)

    def archive_failed(self, kind: str) -> None:
        self.archive_failures.labels(kind=kind).inc()

    def wal_segments_removed(self, n: int) -> None:
        self.wal_removed_segments.inc(n)

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

    def render(self) -> bytes:
        """The Prometheus text exposition of this node's registry."""
        return generate_latest(self.registry)
