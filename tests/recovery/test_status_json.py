"""The recovery status JSON gives every time as Unix seconds and as ISO 8601 next to it."""

from __future__ import annotations

from safekeeper_recovery.core import Lsn, NodeId, PeerInfo, Term
from safekeeper_recovery.recovery._status import RecoveryStatus, iso_time


def test_iso_time_is_utc_with_milliseconds() -> None:
    assert iso_time(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(1_796_540_581.1234) == "2026-12-06T07:03:01.123Z"
    assert iso_time(None) is None


def test_each_epoch_time_has_its_iso_twin() -> None:
    status = RecoveryStatus()
    donor = PeerInfo(node_id=NodeId(2), term=Term(1), last_log_term=Term(1),
                     flush_lsn=Lsn(0x2000000),
                     commit_lsn=Lsn(0x2000000), http_addr="http://127.0.0.1:7677",
                     wal_addr="ws://127.0.0.1:5455", received_at=0.0)
    status.attempt_started(donor, Lsn(0x1000000))
    status.received(Lsn(0x1100000), 0x100000, Lsn(0x2000000))
    doc = status.to_json()
    for name in ("started_at", "first_data_at", "last_data_at"):
        value = doc[name]
        assert isinstance(value, float)
        assert doc[f"{name}_iso"] == iso_time(value)
    assert doc["flushed_at"] is None
    assert doc["flushed_at_iso"] is None
