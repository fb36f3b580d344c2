"""Recovery throttles, pure: a byte-rate token bucket and the quorum-at-risk exemption.

Theory of operation. A node limits the WAL bytes it takes in by peer recovery and the WAL
bytes it serves to recovering peers, each with one node-wide :class:`TokenBucket`. The
caller asks :meth:`TokenBucket.take` how long to wait before the bytes it just moved may be
followed by more; the clock is an argument, so a test drives it with a fake one.

Rules:

T1. A bucket fills at ``rate`` bytes per second up to ``burst`` bytes; it starts full.
T2. A take is never refused and never split: it spends its bytes at once, and the balance
    may go negative (a debt). The delay returned is the time the debt takes to repay, so a
    message of any size (up to 1 MiB of WAL) passes, and over any interval the bytes taken
    are at most ``burst + rate * interval`` plus the last take.
T3. Takers share the debt in arrival order: a second take while in debt waits for the
    first one's debt too. Many recovering timelines together get ``rate``, not each.
T4. ``rate`` ``None`` means unlimited: every take returns 0 and leaves no debt.
T5. Changing the rate (:meth:`TokenBucket.set_rate`) keeps the balance (clamped to the new
    burst): a debt built at the old rate is repaid at the new one.
T6. A timeline whose quorum is at risk (:func:`quorum_at_risk`: fewer than a majority of
    the cluster's nodes are caught up, i.e. alive with a flush position at or past the
    highest known commit position) is exempt from the rate limits and from a donor's cap
    on recovery senders (Kafka exempts in-sync replicas the same way): delaying it delays
    the cluster's availability, not only its redundancy.
T7. The verdict needs a settled peer table: a node that has listened to its peers for
    less than ``heartbeat_timeout`` (it just started) may not have heard from a peer that
    is caught up, so until then nothing is at risk (``settled=False``). At worst a timeline
    really at risk is throttled for that long; the other way round, a node that just
    restarted would take its whole lag unthrottled, which is what the throttle is for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import final

import attrs

from ._donors import PeerInfo
from ._ids import NodeId
from ._lsn import Lsn

__all__ = ["BURST_SECONDS", "MIN_BURST", "TokenBucket", "quorum_at_risk"]

BURST_SECONDS = 0.05
"""A bucket holds at most this much time's worth of bytes: small, so that a 10 s window
carries ``rate`` within a few percent, large enough to need no wake-up per message."""
MIN_BURST = 64 * 1024
"""...and at least this many bytes (low rates would otherwise wake up for every page)."""


def _burst_for(rate: float) -> float:
    return max(float(MIN_BURST), rate * BURST_SECONDS)


@final
@attrs.define
class TokenBucket:
    """A byte-rate limit (rules T1-T5). ``rate`` is bytes per second, ``None`` unlimited.

    A take returns a *ticket*: the amount of refill after which its taker may go on;
    :meth:`wait` converts a ticket into seconds at the rate in force now, so a rate changed
    while takers wait applies to them at once.
    """

    rate: float | None
    _tokens: float = attrs.field(init=False, default=0.0)
    _refilled: float = attrs.field(init=False, default=0.0)
    """Bytes of refill since the start, uncapped (tickets are measured on it)."""
    _last: float | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        _check_rate(self.rate)
        self._tokens = self.burst

    @property
    def burst(self) -> float:
        return math.inf if self.rate is None else _burst_for(self.rate)

    def _refill(self, now: float) -> None:
        if self._last is not None and now > self._last and self.rate is not None:
            delta = (now - self._last) * self.rate
            self._refilled += delta
            self._tokens = min(self.burst, self._tokens + delta)
        if self._last is None or now > self._last:
            self._last = now

    def take(self, nbytes: int, now: float) -> float:
        """Spend ``nbytes`` at time ``now`` (rule T2: never refused); return the ticket to
        pass to :meth:`wait`."""
        assert nbytes >= 0, f"T2: a take of {nbytes} bytes"
        self._refill(now)
        if self.rate is None:
            return self._refilled
        self._tokens -= nbytes
        return self._refilled + max(0.0, -self._tokens)

    def wait(self, ticket: float, now: float) -> float:
        """Seconds from ``now`` until ``ticket``'s taker may go on, at the current rate
        (0: go now; always 0 when unlimited)."""
        self._refill(now)
        if self.rate is None or ticket <= self._refilled:
            return 0.0
        return (ticket - self._refilled) / self.rate

    def set_rate(self, rate: float | None, now: float) -> None:
        """Change the rate from ``now`` on (rule T5). Unlimited forgives every debt."""
        _check_rate(rate)
        self._refill(now)
        self.rate = rate
        if rate is None:
            self._tokens = math.inf
            self._refilled = math.inf
        else:
            if math.isinf(self._refilled):
                self._refilled = 0.0
            self._tokens = min(self._tokens, self.burst)

    def debt_seconds(self, now: float) -> float:
        """How long a take of 0 bytes would wait now (status: is it throttling?)."""
        self._refill(now)
        if self.rate is None or self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate


def _check_rate(rate: float | None) -> None:
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"a rate must be a positive number of bytes per second, got {rate!r}")


def quorum_at_risk(
    my_node_id: NodeId,
    my_flush_lsn: Lsn,
    my_commit_lsn: Lsn,
    peers: Sequence[PeerInfo],
    now: float,
    heartbeat_timeout: float,
    *,
    settled: bool = True,
) -> bool:
    """Rules T6-T7: whether fewer than a majority of the timeline's nodes are caught up.

    The cluster is this node and every peer in ``peers`` (the timeline's peer table, alive
    or not). A node is caught up when it is alive (this node always is; a peer whose info
    is younger than ``heartbeat_timeout``) and its flush_lsn is at least the highest
    commit_lsn any of them reported: WAL a quorum acknowledged. So in a 3-node cluster
    with one node down, the third node lagging is at risk; with all three up, it is not.
    ``settled`` says whether the caller has listened to its peers for ``heartbeat_timeout``
    yet (rule T7; ``False``: never at risk).
    """
    if not settled:
        return False
    members = {p.node_id: p for p in peers if p.node_id != my_node_id}
    commit = max([int(my_commit_lsn)] + [int(p.commit_lsn) for p in members.values()])
    caught_up = int(int(my_flush_lsn) >= commit)
    caught_up += sum(
        1 for p in members.values()
        if now - p.received_at <= heartbeat_timeout and int(p.flush_lsn) >= commit
    )
    cluster = len(members) + 1
    return caught_up < cluster // 2 + 1
