"""The recovery engine: one supervisor per timeline, node-wide limits and observability.

Per timeline, :meth:`RecoveryEngine.supervise` loops forever (until cancelled):

1. read the local view and select donors (pure, explained: ``why_no_donor``);
2. no donor → wait for a change (peer info, local state), a trigger, or the slow fallback
   tick — event-driven, so idle timelines cost next to nothing: a waiting supervisor is
   one parked task with one deadline (no helper tasks, no nursery);
3. donors → ask the node-wide scheduler for a slot (``waiting`` with a queue position
   while the slots are taken: quorum at risk first, then the smallest lag, with ageing;
   core/_schedule.py; both re-checked every second while it waits, so a quorum that
   turns at risk moves the timeline to the front), re-check the donors once it is
   granted, then attempt the best donor, paying the node-wide intake throttle for every
   WAL byte received (exempt while the timeline's quorum is at risk, re-checked every
   second); when a donor fails (unreachable, busy, timeout, stream error) fail over to
   the next one; the slot is given back as soon as the attempt ends, failed or not, and
   an attempt that has everything its donor had ends at once (no ``caught_up_grace``)
   while others wait for a slot;
4. after a failure, wait a jittered exponential back-off (0.5 s → 30 s, reset on success),
   cut short by a trigger or by news that changes the reason: the donors on offer (which
   nodes, in which term) differ from the ones that just failed. More of the same news (a
   donor's flush_lsn moving on) does not cut it short, so a failing donor is not hammered.

Every donor selection is counted by what caused it (``evaluations``: start, change, tick,
trigger, retry, after_attempt), per timeline in the status and node-wide for metrics.

Attempts end with one typed outcome (:class:`AttemptResult`); a term change, a proposer
arriving, an admin cancel or the timeline's deletion (cancellation) all end the attempt's
nursery cleanly.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog
import trio

from ..core import (
    DonorSelection,
    DonorUnavailable,
    LocalView,
    TenantTimelineId,
    quorum_at_risk,
)
from ._attempt import AttemptCancelled, AttemptResult, RecoveryConfig, run_attempt
from ._donor import DonorConnector
from ._status import RecoveryStatus
from ._target import RecoveryTarget, select_for
from ._throttle import RecoveryThrottles

__all__ = ["PauseGate", "RecoveryEngine", "RecoveryMetrics"]

log = structlog.get_logger("safekeeper_recovery.recovery")


class RecoveryMetrics(Protocol):
    """Where the engine reports (per node, low cardinality)."""

    def attempt_finished(self, outcome: str) -> None: ...
    def bytes_received(self, n: int) -> None: ...


class PauseGate(Protocol):
    """Something that may hold every recovery back (the node's disk guard): ``paused`` is
    why (``None``: go on); :meth:`wait_resumed` returns once it is ``None`` again."""

    @property
    def paused(self) -> str | None: ...

    async def wait_resumed(self) -> None: ...


class _NoMetrics:
    def attempt_finished(self, outcome: str) -> None:
        pass

    def bytes_received(self, n: int) -> None:
        pass


RISK_RECHECK = 1.0
"""While WAL flows, an attempt re-checks every this many seconds whether its timeline's
quorum is at risk (exempt from the intake throttle)."""


class RecoveryEngine:
    """Node-wide recovery: config, donor connector, throttles and scheduler, statuses,
    admin controls.

    Embed it: ``nursery.start_soon(engine.supervise, my_target)`` per timeline, where
    ``my_target`` implements :class:`RecoveryTarget`. Cancel the task to stop.
    ``throttles`` (default: no rate limits, ``config.max_concurrent`` slots) may be shared
    with the node's WAL port, which applies its donor-side limits.
    """

    def __init__(
        self,
        connector: DonorConnector,
        config: RecoveryConfig | None = None,
        *,
        metrics: RecoveryMetrics | None = None,
        rng: random.Random | None = None,
        enabled: bool = True,
        throttles: RecoveryThrottles | None = None,
    ) -> None:
        self.connector = connector
        self.config = config or RecoveryConfig()
        self.metrics = metrics or _NoMetrics()
        self.rng = rng or random.Random()
        self.enabled = enabled
        self.statuses: dict[TenantTimelineId, RecoveryStatus] = {}
        self.throttles = throttles or RecoveryThrottles(
            intake_rate=None, serve_rate=None, max_concurrent=self.config.max_concurrent)
        self.scheduler = self.throttles.scheduler
        self._listening_since: float | None = None
        """When the first supervisor started: the peer table is settled a heartbeat
        timeout later (core rule T7)."""
        self._triggered: set[TenantTimelineId] = set()
        self._wait_scopes: dict[TenantTimelineId, trio.CancelScope] = {}
        self._attempt_scopes: dict[TenantTimelineId, trio.CancelScope] = {}
        self.evaluations: dict[str, int] = {}
        """Node-wide donor selections by cause (``start``, ``change``, ``tick``, …)."""

    @property
    def active_recoveries(self) -> int:
        return sum(1 for s in self.statuses.values() if s.state == "recovering")

    @property
    def waiting_recoveries(self) -> int:
        return self.scheduler.waiting

    def total_lag_bytes(self) -> int:
        """Bytes still to receive, over recovering and waiting timelines."""
        return sum(s.lag_bytes for s in self.statuses.values())

    def total_rate(self) -> float:
        """Bytes per second flushed by recovery now, node-wide."""
        return sum(s.rate() for s in self.statuses.values() if s.state == "recovering")

    def progress(self) -> dict[str, object]:
        """Node-wide progress: remaining bytes, rate, ETA (``None`` while nothing flows),
        recovering and waiting timelines."""
        remaining = self.total_lag_bytes()
        rate = self.total_rate()
        return {
            "recovering": self.active_recoveries,
            "waiting": self.waiting_recoveries,
            "lag_bytes": remaining,
            "rate_bytes_per_second": round(rate),
            "eta_seconds": round(remaining / rate, 1) if rate > 0 and remaining else None,
        }

    # ---- admin --------------------------------------------------------------------------

    def snapshot_all(self) -> list[dict[str, object]]:
        return [
            {"tenant_id": str(t.tenant_id), "timeline_id": str(t.timeline_id), **s.to_json()}
            for t, s in sorted(self.statuses.items())
        ]

    def trigger(self, ttid: TenantTimelineId) -> None:
        """Re-check now (skips an idle wait or a back-off). KeyError if unknown."""
        if ttid not in self.statuses:
            raise KeyError(ttid)
        self._triggered.add(ttid)
        scope = self._wait_scopes.get(ttid)
        if scope is not None:
            scope.cancel()

    def cancel(self, ttid: TenantTimelineId) -> None:
        """Abort the current attempt (it ends as ``cancelled`` and backs off)."""
        if ttid not in self.statuses:
            raise KeyError(ttid)
        scope = self._attempt_scopes.get(ttid)
        if scope is not None:
            scope.cancel()

    # ---- the supervisor -----------------------------------------------------------------

    async def supervise(
        self, target: RecoveryTarget, *, broken: Callable[[], str | None] = lambda: None,
        gate: PauseGate | None = None,
    ) -> None:
        """Keep ``target`` caught up with its peers. Never returns unless cancelled
        (or the timeline is broken: then the state says so and the task ends). While
        ``gate`` says why (the node's disk guard refuses WAL), no attempt starts: the
        state is ``paused`` with the reason, until the gate opens."""
        ttid = target.ttid
        if self._listening_since is None:
            self._listening_since = trio.current_time()
        status = self.statuses.setdefault(ttid, RecoveryStatus())
        status.queue = lambda: self.scheduler.position(ttid)
        # Bound lazily: binding a logger per supervisor costs every idle timeline memory.
        logger: structlog.typing.FilteringBoundLogger | None = None
        failures = 0
        cause = "start"
        try:
            while True:
                if (reason := broken()) is not None:
                    status.state = "broken"
                    status.last_error = reason
                    return
                if gate is not None and (why := gate.paused) is not None:
                    status.state = "paused"
                    status.paused = why
                    await gate.wait_resumed()
                    status.paused = None
                    status.state = "idle"
                    cause = "resumed"
                    continue
                selection, view = await self._evaluate_view(target, status, cause)
                if not selection.donors:
                    status.state = "idle"
                    tick = self.config.fallback_tick * (0.5 + self.rng.random())
                    cause = await self._wait(target, tick)
                    continue
                if logger is None:
                    logger = log.bind(tenant=str(ttid.tenant_id), timeline=str(ttid.timeline_id))
                logger.info("starting recovery", selection=str(selection))
                result = await self._attempt_with_failover(target, selection, view, status,
                                                           logger)
                if result is None:  # waited for a slot, and then no donor was left
                    status.state = "idle"
                    cause = "change"
                    continue
                if result.error is None:
                    failures = 0
                    status.state = "idle"
                    cause = "after_attempt"
                    continue
                failures += 1
                delay = min(self.config.backoff_max,
                            self.config.backoff_initial * 2 ** (failures - 1))
                delay *= 0.5 + 0.5 * self.rng.random()  # jitter: never in lockstep
                status.state = "backoff"
                status.backoff_until = trio.current_time() + delay
                cause = await self._back_off(target, status, selection, delay)
                status.backoff_until = None
        finally:
            self._triggered.discard(ttid)
            self._wait_scopes.pop(ttid, None)
            self._attempt_scopes.pop(ttid, None)

    async def _evaluate(
        self, target: RecoveryTarget, status: RecoveryStatus, cause: str
    ) -> DonorSelection:
        return (await self._evaluate_view(target, status, cause))[0]

    async def _evaluate_view(
        self, target: RecoveryTarget, status: RecoveryStatus, cause: str
    ) -> tuple[DonorSelection, LocalView]:
        view = await target.local_view()
        selection = select_for(target.node_id, view, self.config.heartbeat_timeout)
        status.why_no_donor = selection.why_no_donor
        status.evaluations += 1
        self.evaluations[cause] = self.evaluations.get(cause, 0) + 1
        return selection, view

    def _at_risk(self, target: RecoveryTarget, view: LocalView) -> bool:
        since = self._listening_since
        settled = since is not None and trio.current_time() - since >= \
            self.config.heartbeat_timeout
        return quorum_at_risk(target.node_id, view.flush_lsn, view.commit_lsn, view.peers,
                              view.now, self.config.heartbeat_timeout, settled=settled)

    async def _back_off(
        self, target: RecoveryTarget, status: RecoveryStatus, failed: DonorSelection,
        delay: float,
    ) -> str:
        """Wait up to ``delay`` after ``failed`` failed; returns the cause of the next
        evaluation: ``retry`` (waited it out), ``trigger``, or ``change`` (the donors on
        offer are not the ones that failed)."""
        deadline = trio.current_time() + delay
        failed_key = _donor_key(failed)
        while True:
            cause = await self._wait(target, deadline - trio.current_time())
            if cause == "tick":
                return "retry"
            if cause == "trigger":
                return cause
            selection = await self._evaluate(target, status, "change")
            if _donor_key(selection) != failed_key:
                return "change"

    async def _attempt_with_failover(
        self,
        target: RecoveryTarget,
        selection: DonorSelection,
        view: LocalView,
        status: RecoveryStatus,
        logger: structlog.typing.FilteringBoundLogger,
    ) -> AttemptResult | None:
        """Attempt the donors of ``selection`` in order, holding one scheduler slot;
        ``None`` if, once a queued slot was granted, no donor was left."""
        ttid = target.ttid
        at_risk = self._at_risk(target, view)
        status.quorum_at_risk = at_risk
        best = selection.donors[0]
        queued: list[bool] = []

        def on_wait() -> None:
            queued.append(True)
            status.state = "waiting"
            status.donor = int(best.node_id)
            status.start_lsn = status.received_lsn = status.flushed_lsn = view.flush_lsn
            status.target_lsn = best.flush_lsn
            status.waiting_since = trio.current_time()

        def on_grant() -> None:
            status.state = "recovering"
            status.waiting_since = None

        async def refresh() -> tuple[bool, int] | None:
            # While queued, the verdict and the lag of now decide the place (rule G6): a
            # peer going silent makes no change event, so this runs on a timer.
            now = await target.local_view()
            offer = select_for(target.node_id, now, self.config.heartbeat_timeout)
            status.quorum_at_risk = self._at_risk(target, now)
            if not offer.donors:
                return None  # checked again once granted
            status.target_lsn = offer.donors[0].flush_lsn
            status.flushed_lsn = now.flush_lsn
            return (status.quorum_at_risk,
                    max(0, int(offer.donors[0].flush_lsn) - int(now.flush_lsn)))

        result: AttemptResult | None = None
        lag = max(0, int(best.flush_lsn) - int(view.flush_lsn))
        try:
            async with self.scheduler.slot(ttid, at_risk=at_risk, lag_bytes=lag,
                                           on_wait=on_wait, on_grant=on_grant,
                                           refresh=refresh):
                status.waiting_since = None
                donors = selection.donors
                if queued:
                    # The wait may have been long: the donors on offer may have changed.
                    selection, view = await self._evaluate_view(target, status, "slot")
                    if not selection.donors:
                        return None
                    donors = selection.donors
                    status.quorum_at_risk = self._at_risk(target, view)
                pay = self._intake_payer(target, status)
                for donor in donors:
                    status.attempts += 1
                    status.state = "recovering"
                    status.donor = int(donor.node_id)
                    with trio.CancelScope() as scope:
                        self._attempt_scopes[ttid] = scope
                        result = await run_attempt(target, donor, self.connector, self.config,
                                                   status, pay=pay, contended=self._contended)
                    self._attempt_scopes.pop(ttid, None)
                    if scope.cancelled_caught:
                        err = AttemptCancelled("cancelled by an operator")
                        result = AttemptResult(donor, err, str(err), donor.flush_lsn,
                                               donor.flush_lsn, 0)
                    assert result is not None
                    status.last_outcome = result.outcome
                    status.last_error = None if result.error is None else result.message
                    self.metrics.attempt_finished(result.outcome)
                    self.metrics.bytes_received(result.bytes)
                    event = logger.info if result.error is None else logger.warning
                    event(
                        "recovery attempt ended",
                        donor=int(donor.node_id),
                        outcome=result.outcome,
                        detail=result.message,
                        bytes=result.bytes,
                        end_lsn=str(result.end_lsn),
                    )
                    if result.error is None or not isinstance(result.error, DonorUnavailable):
                        break  # only donor trouble is worth trying the next donor for
        finally:
            status.waiting_since = None
        assert result is not None
        return result

    def _contended(self) -> bool:
        """Other timelines wait for a recovery slot (an attempt caught up gives its back)."""
        return self.scheduler.waiting > 0

    def _intake_payer(
        self, target: RecoveryTarget, status: RecoveryStatus
    ) -> Callable[[int], Awaitable[None]]:
        """What an attempt pays for each WAL message: the node-wide intake throttle,
        exempt while the quorum is at risk (rule T6), re-checked every RISK_RECHECK s,
        also while it waits."""
        intake = self.throttles.intake
        checked = trio.current_time()

        async def at_risk() -> bool:
            nonlocal checked
            checked = trio.current_time()
            status.quorum_at_risk = self._at_risk(target, await target.local_view())
            return status.quorum_at_risk

        async def pay(nbytes: int) -> None:
            if intake.rate is None:
                intake.bytes += nbytes
                return
            if trio.current_time() - checked >= RISK_RECHECK:
                await at_risk()
            await intake.pay(nbytes, exempt=status.quorum_at_risk, release=at_risk)

        return pay

    async def _wait(self, target: RecoveryTarget, delay: float) -> str:
        """Wait up to ``delay`` for a local/peer change or a trigger; returns what ended
        the wait: ``change``, ``trigger`` or ``tick`` (the time ran out)."""
        ttid = target.ttid
        if ttid not in self._triggered:
            # One cancel scope, cancelled by trigger(): no helper tasks per waiting timeline.
            with trio.move_on_after(max(0.0, delay)) as scope:
                self._wait_scopes[ttid] = scope
                try:
                    await target.wait_for_change()
                finally:
                    del self._wait_scopes[ttid]
            if ttid not in self._triggered:
                return "tick" if scope.cancelled_caught else "change"
        self._triggered.discard(ttid)
        return "trigger"


def _donor_key(selection: DonorSelection) -> tuple[tuple[int, int, int], ...]:
    """What a retry would be offered: the donors and their (term, last_log_term)."""
    return tuple((int(d.node_id), d.term, d.last_log_term) for d in selection.donors)
