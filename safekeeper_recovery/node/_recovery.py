"""The node's recovery engine, built from the node's configuration."""

from __future__ import annotations

from ..recovery import NetworkDonorConnector, RecoveryConfig, RecoveryEngine
from ..transport import NodeMetrics
from ._config import NodeConfig

__all__ = ["build_recovery_engine"]


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
    return engine
