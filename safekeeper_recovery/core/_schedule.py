"""Which lagging timeline recovers next: the node-wide recovery queue's policy, pure.

A node recovers at most ``max_concurrent`` timelines at once; the others wait in a queue.
When a slot frees, :func:`recovery_order` says who gets it.

Rules:

F1. Quorum at risk first (core/_throttle.py rule T6): such a timeline is the one whose
    delay costs availability.
F2. Then the smallest lag first: a small lag is done soon and frees its slot, so the
    number of timelines still behind falls fastest (shortest job first).
F3. Ageing: a timeline that has waited ``ageing`` seconds or more goes ahead of every
    timeline that has not (after F1), oldest first, so a large lag is never starved by a
    stream of small ones: its wait is bounded by ``ageing`` plus the time the queue ahead
    of it takes.
F4. Ties go to the one that waited longest, then to the timeline id: the same queue
    always gives the same order.
F5. A failed attempt gives its slot back and backs off outside the queue (the engine's
    job): it comes back as a newcomer, with a fresh wait.
F6. The verdict and the lag are those of now, not of when the timeline joined: a waiter
    re-checked while it waits (:meth:`QueueEntry.revised`) keeps its place in time
    (``since``), so a timeline whose quorum turns at risk while it waits goes first at
    once (F1), and a revision never resets its ageing (F3).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import final

import attrs

from ._ids import TenantTimelineId

__all__ = ["DEFAULT_AGEING", "QueueEntry", "recovery_order"]

DEFAULT_AGEING = 60.0
"""Seconds of waiting after which a timeline goes ahead of smaller lags (rule F3)."""


@final
@attrs.frozen
class QueueEntry:
    """One timeline waiting for a recovery slot."""

    ttid: TenantTimelineId
    at_risk: bool
    lag_bytes: int
    since: float
    """When it joined the queue (the caller's monotonic clock)."""

    def revised(self, *, at_risk: bool, lag_bytes: int) -> QueueEntry:
        """The same waiter with a fresh verdict and lag, waiting since the same time
        (rule F6)."""
        return attrs.evolve(self, at_risk=at_risk, lag_bytes=lag_bytes)


def recovery_order(
    waiting: Iterable[QueueEntry], now: float, ageing: float = DEFAULT_AGEING
) -> list[QueueEntry]:
    """The queue in the order slots are handed out (rules F1-F4): first gets the next."""

    def key(e: QueueEntry) -> tuple[bool, bool, int, float, TenantTimelineId]:
        aged = now - e.since >= ageing
        return (not e.at_risk, not aged, 0 if aged else e.lag_bytes, e.since, e.ttid)

    return sorted(waiting, key=key)
