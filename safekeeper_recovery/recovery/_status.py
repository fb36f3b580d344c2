"""A timeline's recovery state, as the status JSON, admin API and metrics show it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, Literal

import attrs

from ..core import Lsn, PeerInfo

__all__ = ["RecoveryState", "RecoveryStatus", "iso_time"]


def iso_time(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 in UTC with milliseconds (``2026-12-06T07:03:01.123Z``)."""
    if seconds is None:
        return None
    text = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")

RecoveryState = Literal["idle", "waiting", "backoff", "recovering", "disabled", "broken",
                       "paused"]
"""``waiting``: lagging, with a donor, queued for one of the node's recovery slots."""

RATE_WINDOW: Final = 5.0
"""The rate shown is the flush progress over about the last this many seconds."""
FLUSH_GRACE: Final = 1.0
"""A flush older than this lowers the rate shown (the acceptor flushes at least every
second while WAL arrives)."""


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
    quorum_at_risk: bool = False
    """Whether the timeline's quorum was at risk when last checked (exempt from throttles)."""
    waiting_since: float | None = None
    """Monotonic time the timeline joined the recovery queue (while ``waiting``)."""
    queue: Callable[[], int | None] | None = attrs.field(default=None, eq=False, repr=False)
    """The engine's scheduler: this timeline's 1-based queue position while waiting."""
    _samples: deque[tuple[float, int]] = attrs.field(
        factory=lambda: deque(maxlen=256), eq=False, repr=False)
    """(monotonic time, flushed LSN) of recent flushes, for :meth:`rate`."""
    paused: str | None = None
    """Why recovery waits (state ``paused``): the node's disk is past --max-disk-usage."""

    def attempt_started(self, donor: PeerInfo, start_lsn: Lsn) -> None:
        self.state = "recovering"
        self.donor = int(donor.node_id)
        self.started_at = time.time()
        self.start_lsn = self.received_lsn = self.flushed_lsn = start_lsn
        self.target_lsn = donor.flush_lsn
        self.bytes = 0
        self.first_data_at = None
        self._samples.clear()
        self._samples.append((time.monotonic(), int(start_lsn)))

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
            now = time.monotonic()
            samples = self._samples
            samples.append((now, int(lsn)))
            # Keep one sample older than the window as its anchor.
            while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW:
                samples.popleft()
        self.flushed_lsn = lsn

    @property
    def lag_bytes(self) -> int:
        """Bytes still to flush: while recovering, up to the donor's end; while waiting,
        the lag at the last re-check of the queue (about every second)."""
        if (self.state not in ("recovering", "waiting") or self.target_lsn is None
                or self.flushed_lsn is None):
            return 0
        return max(0, int(self.target_lsn) - int(self.flushed_lsn))

    def rate(self, now: float | None = None) -> float:
        """Bytes per second flushed over about the last ``RATE_WINDOW`` seconds of this
        attempt (0 when not recovering or nothing was flushed yet)."""
        if self.state != "recovering" or not self._samples:
            return 0.0
        now = time.monotonic() if now is None else now
        t0, lsn0 = self._samples[0]
        for t, lsn in self._samples:  # the oldest sample inside the window, else the anchor
            if t >= now - RATE_WINDOW:
                break
            t0, lsn0 = t, lsn
        t1, lsn1 = self._samples[-1]
        # Flushes come in steps (a batch, at least every second while WAL flows): measure
        # up to the last one, unless it is older than the grace (then the flow stalled and
        # the rate falls with the time since).
        elapsed = max(t1 - t0, now - t0 - FLUSH_GRACE)
        if lsn1 <= lsn0 or elapsed <= 0:
            return 0.0
        return (lsn1 - lsn0) / elapsed

    def eta_seconds(self) -> float | None:
        """Seconds to catch up with the donor's end at the current rate (``None``: not
        recovering or no rate yet)."""
        rate = self.rate()
        lag = self.lag_bytes
        if rate <= 0:
            return None
        return lag / rate

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
            "rate_bytes_per_second": round(self.rate()),
            "eta_seconds": None if (eta := self.eta_seconds()) is None else round(eta, 1),
            "quorum_at_risk": self.quorum_at_risk,
            "queue_position": (self.queue() if self.state == "waiting"
                               and self.queue is not None else None),
            "paused": self.paused,
        }
