"""A timeline's recovery state, as the status JSON, admin API and metrics show it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

import attrs

from ..core import Lsn, PeerInfo

__all__ = ["RecoveryState", "RecoveryStatus", "iso_time"]


def iso_time(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 in UTC with milliseconds (``2026-12-06T07:03:01.123Z``)."""
    if seconds is None:
        return None
    text = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")

RecoveryState = Literal["idle", "backoff", "recovering", "disabled", "broken"]


@attrs.define
class RecoveryStatus:
    """Mutable, owned by one timeline's supervisor; read by HTTP and metrics."""

    state: RecoveryState = "idle"
    donor: int | None = None
    started_at: float | None = None
    """Wall-clock (Unix) time the current attempt started streaming."""
    start_lsn: Lsn | None = None
    target_lsn: Lsn | None = None
    received_lsn: Lsn | None = None
    flushed_lsn: Lsn | None = None
    flushed_at: float | None = None
    """Wall-clock (Unix) time ``flushed_lsn`` last moved (benchmarks time catch-up by it
    instead of polling the status fast, which would load the node they measure)."""
    bytes: int = 0
    """WAL bytes received in the current (or last) attempt."""
    first_data_at: float | None = None
    """Wall-clock (Unix) time the current attempt's first WAL data arrived."""
    last_data_at: float | None = None
    """Wall-clock (Unix) time WAL data last arrived from a donor."""
    total_bytes: int = 0
    attempts: int = 0
    last_outcome: str | None = None
    last_error: str | None = None
    why_no_donor: str | None = None
    backoff_until: float | None = None
    evaluations: int = 0
    """Donor selections run so far (each wake-up of the supervisor runs one)."""

    def attempt_started(self, donor: PeerInfo, start_lsn: Lsn) -> None:
        self.state = "recovering"
        self.donor = int(donor.node_id)
        self.started_at = time.time()
        self.start_lsn = self.received_lsn = self.flushed_lsn = start_lsn
        self.target_lsn = donor.flush_lsn
        self.bytes = 0
        self.first_data_at = None

    def received(self, lsn: Lsn, nbytes: int, donor_end: Lsn) -> None:
        if nbytes:
            self.last_data_at = time.time()
            if self.first_data_at is None:
                self.first_data_at = self.last_data_at
        self.received_lsn = lsn
        self.bytes += nbytes
        self.total_bytes += nbytes
        if self.target_lsn is None or donor_end > self.target_lsn:
            self.target_lsn = donor_end

    def flushed(self, lsn: Lsn) -> None:
        if lsn != self.flushed_lsn:
            self.flushed_at = time.time()
        self.flushed_lsn = lsn

    @property
    def lag_bytes(self) -> int:
        if self.state != "recovering" or self.target_lsn is None or self.flushed_lsn is None:
            return 0
        return max(0, int(self.target_lsn) - int(self.flushed_lsn))

    def to_json(self) -> dict[str, object]:
        """The status JSON object. Times are Unix seconds (``*_at``) with the same instant
        in ISO 8601, UTC, next to each (``*_at_iso``)."""
        def lsn(v: Lsn | None) -> str | None:
            return None if v is None else str(v)

        times = {
            f"{name}_iso": iso_time(getattr(self, name))
            for name in ("started_at", "flushed_at", "first_data_at", "last_data_at")
        }
        return {**times,
            "state": self.state,
            "donor": self.donor,
            "started_at": self.started_at,
            "start_lsn": lsn(self.start_lsn),
            "target_lsn": lsn(self.target_lsn),
            "received_lsn": lsn(self.received_lsn),
            "flushed_lsn": lsn(self.flushed_lsn),
            "flushed_at": self.flushed_at,
            "bytes": self.bytes,
            "first_data_at": self.first_data_at,
            "last_data_at": self.last_data_at,
            "total_bytes": self.total_bytes,
            "attempts": self.attempts,
            "last_outcome": self.last_outcome,
            "last_error": self.last_error,
            "why_no_donor": self.why_no_donor,
            "evaluations": self.evaluations,
            "lag_bytes": self.lag_bytes,
        }
