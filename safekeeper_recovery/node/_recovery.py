"""The node's recovery engine, built from the node's configuration."""

from __future__ import annotations

from collections.abc import Iterator

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..core import TenantTimelineId
from ..recovery import PauseGate, RecoveryConfig, RecoveryEngine, RecoveryStatus, RecoveryThrottles
from ..timeline import LocalTarget, Timeline, TimelineService
from ..transport import NetworkDonorConnector, NodeMetrics
from ._config import NodeConfig

__all__ = ["EVALUATIONS_METRIC", "NODE_FALLBACK_TICK", "build_recovery_engine",
           "close_recovery_engine",
           "build_throttles", "recovery_service"]

NODE_FALLBACK_TICK = 300.0
"""A node's supervisors re-check without news every 150-450 s (jittered). Only a safety
net: peer news and local changes wake them. At 10,000 timelines the engine's 60 s default
alone would cost about 1 % of a core in timer wake-ups."""

EVALUATIONS_METRIC = "safekeeper_recovery_evaluations"
"""Counter (``_total`` in the text format), label ``cause``: donor selections run by the
supervisors, by what woke them (``change`` is peer or local news: how the benchmark sees
that one peer-info batch woke every timeline)."""


class _EvaluationsCollector:
    """Reads the engine's counts at scrape time (nothing per evaluation but a dict add)."""

    def __init__(self, engine: RecoveryEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            EVALUATIONS_METRIC, "Donor selections by recovery supervisors, by cause",
            labels=["cause"],
        )
        for cause, n in sorted(self._engine.evaluations.items()):
            family.add_metric([cause], n)
        yield family


class _ThrottlesCollector:
    """The throttles and node-wide progress, read at scrape time."""

    def __init__(self, engine: RecoveryEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        engine = self._engine
        t = engine.throttles
        paid = CounterMetricFamily(
            "safekeeper_recovery_throttle_bytes",
            "WAL bytes through the recovery throttles, by direction (intake: received by "
            "recovery; serve: sent to recovering peers) and whether they were exempt "
            "(quorum at risk)", labels=["direction", "exempt"])
        waited = CounterMetricFamily(
            "safekeeper_recovery_throttle_wait_seconds",
            "Time recovery streams waited for a throttle, summed over streams",
            labels=["direction"])
        limit = GaugeMetricFamily(
            "safekeeper_recovery_max_rate_bytes",
            "The throttle's rate in bytes per second (0: unlimited)", labels=["direction"])
        for name, rl in (("intake", t.intake), ("serve", t.serve)):
            paid.add_metric([name, "false"], rl.bytes)
            paid.add_metric([name, "true"], rl.exempt_bytes)
            waited.add_metric([name], rl.waited_seconds)
            limit.add_metric([name], 0 if rl.rate is None else rl.rate)
        yield paid
        yield waited
        yield limit
        yield CounterMetricFamily(
            "safekeeper_recovery_senders_refused",
            "Recovery streams refused as busy (the cap on recovery senders)",
            value=t.refused_senders)
        yield GaugeMetricFamily(
            "safekeeper_recovery_senders_active", "Recovery streams this node serves now",
            value=t.active_senders)
        yield GaugeMetricFamily(
            "safekeeper_recoveries_waiting",
            "Lagging timelines queued for a recovery slot", value=engine.waiting_recoveries)
        rate = engine.total_rate()
        yield GaugeMetricFamily(
            "safekeeper_recovery_rate_bytes",
            "Bytes per second flushed by peer recovery now, node-wide", value=rate)
        lag = engine.total_lag_bytes()
        eta = GaugeMetricFamily(
            "safekeeper_recovery_eta_seconds",
            "Seconds until the node's recoveries catch up at the current rate (absent "
            "while nothing flows)")
        if rate > 0 and lag:
            eta.add_metric([], lag / rate)
        yield eta


def build_throttles(config: NodeConfig) -> RecoveryThrottles:
    """The node's throttles and recovery scheduler, from ``config`` (0 rates: unlimited);
    shared by the recovery engine and the WAL port."""
    return RecoveryThrottles(
        intake_rate=config.recovery_max_rate or None,
        serve_rate=config.recovery_serve_max_rate or None,
        max_senders=config.recovery_max_senders,
        max_concurrent=config.max_concurrent_recoveries,
    )


def build_recovery_engine(
    config: NodeConfig, metrics: NodeMetrics, peer_token: str | None,
    *, throttles: RecoveryThrottles | None = None,
) -> RecoveryEngine:
    """One engine per node: its timeouts, throttles (``build_throttles``, unless given),
    concurrency limit and auth token come from ``config``; with recovery off it still
    reports ``state: disabled`` per timeline."""
    recovery_config = RecoveryConfig(
        http_timeout=config.http_timeout,
        connect_timeout=config.connect_timeout,
        no_data_timeout=config.no_data_timeout,
        heartbeat_timeout=config.heartbeat_timeout,
        max_concurrent=config.max_concurrent_recoveries,
        fallback_tick=NODE_FALLBACK_TICK,
    )
    engine = RecoveryEngine(
        NetworkDonorConnector(
            token=peer_token,
            http_timeout=config.http_timeout,
            connect_timeout=config.connect_timeout,
            pooled=True,
        ),
        recovery_config,
        metrics=metrics,
        enabled=config.recovery,
        throttles=throttles if throttles is not None else build_throttles(config),
    )
    # Gauges read at scrape time: no per-timeline labels, no bookkeeping on the hot path.
    metrics.active_recoveries.set_function(lambda: engine.active_recoveries)
    metrics.recovery_lag_bytes.set_function(engine.total_lag_bytes)
    metrics.registry.register(_EvaluationsCollector(engine))
    metrics.registry.register(_ThrottlesCollector(engine))
    return engine


async def close_recovery_engine(engine: RecoveryEngine) -> None:
    """Close what ``build_recovery_engine`` left open: its donor connector's pooled HTTP
    connections (one keep-alive client per donor). Call it once the engine's supervisors
    ended; shielded, so it runs during a shutdown's cancellation too."""
    if isinstance(engine.connector, NetworkDonorConnector):
        with trio.CancelScope(shield=True):
            await engine.connector.aclose()


def recovery_service(
    engine: RecoveryEngine, shown: dict[TenantTimelineId, RecoveryStatus],
    gate: PauseGate | None = None,
) -> TimelineService:
    """The engine as a per-timeline service of the node's :class:`TimelineRegistry`: one
    supervisor per in-process timeline.

    Each timeline's status is registered in ``shown`` (the registry the node's status
    endpoint reads, ``NodeContext.recovery_statuses``) while the timeline runs here, also
    after its supervisor ended (recovery off: ``disabled``; a broken timeline: ``broken``
    with the reason), until the timeline stops or is deleted. While ``gate`` (the
    node's disk guard) refuses WAL, supervisors pause (state ``paused``).
    """

    async def run(timeline: Timeline) -> None:
        ttid = timeline.ttid
        status = engine.statuses.setdefault(ttid, RecoveryStatus())
        shown[ttid] = status
        try:
            if not engine.enabled:
                status.state = "disabled"
            else:
                try:
                    await engine.supervise(LocalTarget(timeline), broken=lambda: timeline.broken,
                                           gate=gate)
                finally:
                    engine.statuses.pop(ttid, None)
            await trio.sleep_forever()  # keep the last status shown while the timeline runs
        finally:
            if shown.get(ttid) is status:  # not replaced by a reloaded timeline's
                del shown[ttid]

    return run
