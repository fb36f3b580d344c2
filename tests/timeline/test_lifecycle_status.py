"""The lifecycle status's archive lag in seconds (``LifecycleStatus``), without I/O."""

from __future__ import annotations

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.timeline import LifecycleStatus

SEG = 1 << 20


def lsn(segments: float) -> Lsn:
    return Lsn(int(segments * SEG))


def test_the_lag_counts_from_when_the_oldest_unarchived_segment_was_committed() -> None:
    status = LifecycleStatus()
    # At t=100 segments 1 and 2 are complete and committed, nothing archived past 1.
    status.note_committed(lsn(1), lsn(3.5), SEG, now=100.0)
    assert status.archive_lag_seconds(lsn(1), lsn(3.5), SEG, now=130.0) == 30.0
    # Segment 3 completes at t=140: the oldest waiting one (1) still counts from t=100.
    status.note_committed(lsn(1), lsn(4.2), SEG, now=140.0)
    assert status.archive_lag_seconds(lsn(1), lsn(4.2), SEG, now=150.0) == 50.0
    # 1 and 2 archived: segment 3 waits, since t=140.
    status.note_committed(lsn(3), lsn(4.2), SEG, now=160.0)
    assert status.archive_lag_seconds(lsn(3), lsn(4.2), SEG, now=170.0) == 30.0
    # Everything complete is archived: no lag, whatever the partial segment holds.
    assert status.archive_lag_seconds(lsn(4), lsn(4.2), SEG, now=170.0) == 0.0
    assert len(status.committed_runs) == 1, "runs below the archived point are dropped"


def test_failures_are_counted_by_kind() -> None:
    status = LifecycleStatus()
    status.failed("server", "503 SlowDown")
    status.failed("server", "503 SlowDown")
    status.failed("timeout", "read timed out")
    assert status.failures == 3
    assert status.failures_by_kind == {"server": 2, "timeout": 1}
    assert status.last_error_kind == "timeout"
