"""The pg port's metrics: stream gauge, sent bytes, and the consumer gauges read at scrape
time (node totals, no per-timeline labels)."""

from __future__ import annotations

from safekeeper_recovery.transport import NodeMetrics


def test_pg_metrics_are_rendered_from_the_consumer_source() -> None:
    metrics = NodeMetrics()
    text = metrics.render().decode()
    assert 'safekeeper_pg_consumers{state="connected"} 0.0' in text
    assert "safekeeper_pg_consumer_max_lag_bytes 0.0" in text

    samples = [(True, 10), (False, 4096), (True, 0)]
    metrics.track_pg_consumers(lambda: samples)
    metrics.pg_stream_started()
    metrics.pg_wal_sent(8192)
    text = metrics.render().decode()
    assert 'safekeeper_pg_consumers{state="connected"} 2.0' in text
    assert 'safekeeper_pg_consumers{state="held"} 1.0' in text
    assert "safekeeper_pg_consumer_max_lag_bytes 4096.0" in text
    assert "safekeeper_pg_streams 1.0" in text
    assert "safekeeper_pg_sent_bytes_total 8192.0" in text
    metrics.pg_stream_ended()
    assert "safekeeper_pg_streams 0.0" in metrics.render().decode()
