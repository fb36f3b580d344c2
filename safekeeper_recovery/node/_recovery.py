"""The node's recovery engine, built from the node's configuration."""

from __future__ import annotations

from collections.abc import Iterator

import trio
from prometheus_client.core import CounterMetricFamily

from ..core import TenantTimelineId
from ..recovery import RecoveryConfig, RecoveryEngine, RecoveryStatus
from ..timeline import LocalTarget, Timeline, TimelineService
from ..transport import NetworkDonorConnector, NodeMetrics
from ._config import NodeConfig

__all__ = ["EVALUATIONS_METRIC", "NODE_FALLBACK_TICK", "build_recovery_engine",
           "recovery_service"]

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


def build_recovery_engine(
    config: NodeConfig, metrics: NodeMetrics, peer_token: str | None
) -> RecoveryEngine:
    """One engine per node: its timeouts, concurrency limit and auth token come from
    ``config``; with recovery off it still reports ``state: disabled`` per timeline."""
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
        ),
        recovery_config,
        metrics=metrics,
        enabled=config.recovery,
    )
    # Gauges read at scrape time: no per-timeline labels, no bookkeeping on the hot path.
    metrics.active_recoveries.set_function(lambda: engine.active_recoveries)
    metrics.recovery_lag_bytes.set_function(engine.total_lag_bytes)
    metrics.registry.register(_EvaluationsCollector(engine))
    return engine


def recovery_service(
    engine: RecoveryEngine, shown: dict[TenantTimelineId, RecoveryStatus]
) -> TimelineService:
    """The engine as a per-timeline service of the node's :class:`TimelineRegistry`: one
    supervisor per in-process timeline.

    Each timeline's status is registered in ``shown`` (the registry the node's status
    endpoint reads, ``NodeContext.recovery_statuses``) while the timeline runs here, also
    after its supervisor ended (recovery off: ``disabled``; a broken timeline: ``broken``
    with the reason), until the timeline stops or is deleted.
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
                    await engine.supervise(LocalTarget(timeline), broken=lambda: timeline.broken)
                finally:
                    engine.statuses.pop(ttid, None)
            await trio.sleep_forever()  # keep the last status shown while the timeline runs
        finally:
            if shown.get(ttid) is status:  # not replaced by a reloaded timeline's
                del shown[ttid]

    return run
