"""The node-wide recovery queue: at most ``limit`` timelines recover at once.

The order is ``core.recovery_order`` (rules F1-F5 in core/_schedule.py); this module holds
the slots and wakes the waiters.

Rules:

G1. A timeline asks for a slot with :meth:`RecoveryScheduler.slot`; it gets one at once
    while fewer than ``limit`` run and nobody waits, else it waits in the queue.
G2. A slot given back (the attempt ended, failed or was cancelled) goes to the first
    waiter in ``recovery_order`` at that moment.
G3. Raising the limit at run time hands out the new slots at once; lowering it never
    cuts a running recovery (the next ones wait until enough have ended).
G4. A waiter cancelled while waiting leaves the queue and holds nothing.
G5. ``position(ttid)`` is the waiter's 1-based place in the order (``None`` if it does
    not wait); it is recomputed at most every ``POSITION_CACHE`` seconds, so a status
    listing of thousands of waiters costs one sort.
G6. A waiter is re-checked while it waits (core rule F6): every ``recheck`` seconds
    (jittered, so thousands of waiters do not wake in lockstep) its ``refresh`` gives its
    verdict and lag of now, and the queue is re-ordered with them, so a timeline whose
    quorum turns at risk while it waits is next. Without ``refresh`` the entry stays as
    it joined.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio

from ..core import DEFAULT_AGEING, QueueEntry, TenantTimelineId, recovery_order

__all__ = ["RecoveryScheduler"]

POSITION_CACHE: Final = 0.5
RECHECK: Final = 1.0
"""Seconds between a waiter's re-checks (rule G6), before jitter."""

Refresh = Callable[[], Awaitable[tuple[bool, int] | None]]
"""A waiter's verdict of now: ``(at_risk, lag_bytes)``, or ``None`` to keep the entry."""


@attrs.define
class _Waiter:
    entry: QueueEntry
    on_grant: Callable[[], None]
    granted: trio.Event = attrs.Factory(trio.Event)


class RecoveryScheduler:
    """Slots for recovering timelines (rules G1-G5). One per node."""

    def __init__(self, limit: int, *, ageing: float = DEFAULT_AGEING,
                 clock: Callable[[], float] = trio.current_time,
                 recheck: float = RECHECK, rng: random.Random | None = None) -> None:
        if limit < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {limit}")
        self.limit = limit
        self.ageing = ageing
        self.recheck = recheck
        self._rng = rng or random.Random()
        self._clock = clock
        self.running: set[TenantTimelineId] = set()
        self._waiting: dict[TenantTimelineId, _Waiter] = {}
        self._positions: dict[TenantTimelineId, int] = {}
        self._positions_at = -float("inf")
        self.granted_order: list[TenantTimelineId] = []
        """The last slots handed out from the queue, oldest first (at most 100)."""

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def set_limit(self, limit: int) -> None:
        """Rule G3 (``ValueError`` if < 1)."""
        if limit < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {limit}")
        self.limit = limit
        self._grant()

    def position(self, ttid: TenantTimelineId) -> int | None:
        """Rule G5."""
        if ttid not in self._waiting:
            return None
        now = self._clock()
        if now - self._positions_at >= POSITION_CACHE or ttid not in self._positions:
            order = recovery_order((w.entry for w in self._waiting.values()), now, self.ageing)
            self._positions = {e.ttid: i for i, e in enumerate(order, 1)}
            self._positions_at = now
        return self._positions.get(ttid)

    def revise(self, ttid: TenantTimelineId, *, at_risk: bool, lag_bytes: int) -> None:
        """Rule G6: ``ttid``'s verdict and lag of now (nothing if it does not wait)."""
        waiter = self._waiting.get(ttid)
        if waiter is None:
            return
        entry = waiter.entry.revised(at_risk=at_risk, lag_bytes=lag_bytes)
        if entry != waiter.entry:
            waiter.entry = entry
            self._positions_at = -float("inf")

    async def _wait_granted(self, waiter: _Waiter, refresh: Refresh | None) -> None:
        """Until ``waiter`` is granted, re-checking it every ``recheck`` s (rule G6)."""
        while not waiter.granted.is_set():
            if refresh is None:
                await waiter.granted.wait()
                return
            with trio.move_on_after(self.recheck * (0.75 + 0.5 * self._rng.random())):
                await waiter.granted.wait()
            if waiter.granted.is_set():
                return
            verdict = await refresh()
            if verdict is not None:
                at_risk, lag_bytes = verdict
                self.revise(waiter.entry.ttid, at_risk=at_risk, lag_bytes=lag_bytes)

    @asynccontextmanager
    async def slot(self, ttid: TenantTimelineId, *, at_risk: bool, lag_bytes: int,
                   on_wait: Callable[[], None] = lambda: None,
                   on_grant: Callable[[], None] = lambda: None,
                   refresh: Refresh | None = None) -> AsyncIterator[None]:
        """Hold a slot for the ``with`` block (rules G1, G2, G4); ``on_wait`` is called if
        the caller has to queue, ``on_grant`` the moment a queued caller gets its slot
        (before its task runs again: a status read in between sees it granted);
        ``refresh`` re-checks a queued caller (rule G6)."""
        assert ttid not in self.running, f"G1: {ttid} asked for a second slot"
        assert ttid not in self._waiting, f"G1: {ttid} asked for a second slot"
        if len(self.running) < self.limit and not self._waiting:
            self.running.add(ttid)
        else:
            waiter = _Waiter(QueueEntry(ttid, at_risk, lag_bytes, self._clock()), on_grant)
            self._waiting[ttid] = waiter
            self._positions_at = -float("inf")
            on_wait()
            try:
                await self._wait_granted(waiter, refresh)
            except BaseException:
                if self._waiting.pop(ttid, None) is None:  # granted as we were cancelled
                    self.running.discard(ttid)
                    self._grant()
                self._positions_at = -float("inf")
                raise
        try:
            yield
        finally:
            self.running.discard(ttid)
            self._grant()

    def _grant(self) -> None:
        while len(self.running) < self.limit and self._waiting:
            first = recovery_order((w.entry for w in self._waiting.values()), self._clock(),
                                   self.ageing)[0]
            waiter = self._waiting.pop(first.ttid)
            self.running.add(first.ttid)
            self.granted_order.append(first.ttid)
            del self.granted_order[:-100]
            waiter.on_grant()
            waiter.granted.set()
        self._positions_at = -float("inf")
