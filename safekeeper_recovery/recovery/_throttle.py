"""The node's recovery throttles, live: byte-rate limits that tasks pay into, and the caps.

One :class:`RecoveryThrottles` per node, shared by the recovery engine (intake: every
recovering timeline pays for the WAL it receives before it reads more) and the WAL port
(serve: every recovery stream pays for the WAL it sends; the cap on concurrent recovery
senders). The policy is ``core.TokenBucket`` (rules T1-T6 in core/_throttle.py); this
module adds the waiting and the counters.

Rules:

B1. Paying waits until the bucket's debt, this payment's included, is repaid; a rate
    changed at run time (:meth:`RateLimit.set_rate`, the HTTP API) applies to payers that
    already wait.
B2. An exempt payment (quorum at risk) never waits and never adds to the debt; it is
    counted apart (``exempt_bytes``). A payer that becomes exempt while it waits (its
    ``release`` check, asked every ``RELEASE_CHECK`` seconds, says so) stops waiting.
B3. ``rate`` ``None`` is unlimited.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import trio

from ..core import TokenBucket
from ._scheduler import RecoveryScheduler

__all__ = [
    "DEFAULT_MAX_SENDERS",
    "DEFAULT_RECOVERY_MAX_RATE",
    "DEFAULT_SERVE_MAX_RATE",
    "RateLimit",
    "RecoveryThrottles",
]

MiB: Final = 1024 * 1024
DEFAULT_RECOVERY_MAX_RATE: Final = 128 * MiB
"""Node-wide recovery intake, bytes/s (docs/throttles.md says why)."""
DEFAULT_SERVE_MAX_RATE: Final = 128 * MiB
"""Node-wide WAL served to recovering peers, bytes/s."""
DEFAULT_MAX_SENDERS: Final = 8
"""Recovery streams a donor serves at once (the recovering side's default slot count)."""
RELEASE_CHECK: Final = 1.0
"""How often a waiting payer asks whether it became exempt (rule B2)."""


class RateLimit:
    """A node-wide byte-rate limit that async tasks pay into (rules B1-B3)."""

    def __init__(self, rate: float | None, *,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self._clock = clock
        self._bucket = TokenBucket(rate)
        self._changed = trio.Event()
        self.bytes = 0
        """Bytes paid for (not exempt)."""
        self.exempt_bytes = 0
        """Bytes that passed without paying (quorum at risk)."""
        self.waited_seconds = 0.0
        """Total time payers spent waiting (summed over payers)."""

    @property
    def rate(self) -> float | None:
        return self._bucket.rate

    def set_rate(self, rate: float | None) -> None:
        """Change the rate now; waiting payers recompute their wait (``ValueError`` for a
        rate that is not positive)."""
        self._bucket.set_rate(rate, self._clock())
        self._changed.set()
        self._changed = trio.Event()

    def throttling(self) -> bool:
        """Whether a payer would wait now."""
        return self._bucket.debt_seconds(self._clock()) > 0

    async def pay(self, nbytes: int, *, exempt: bool = False,
                  release: Callable[[], Awaitable[bool]] | None = None) -> None:
        """Account ``nbytes``; return once the rate allows more (at once if ``exempt``
        or unlimited, or once ``release`` says the payer became exempt). Cancellable."""
        if exempt:
            self.exempt_bytes += nbytes
            return
        self.bytes += nbytes
        ticket = self._bucket.take(nbytes, self._clock())
        while (delay := self._bucket.wait(ticket, self._clock())) > 0:
            started = self._clock()
            changed = self._changed
            with trio.move_on_after(delay if release is None else min(delay, RELEASE_CHECK)):
                await changed.wait()
            self.waited_seconds += self._clock() - started
            if release is not None and await release():
                return

    def to_json(self) -> dict[str, object]:
        return {
            "max_rate": None if self.rate is None else int(self.rate),
            "bytes": self.bytes,
            "exempt_bytes": self.exempt_bytes,
            "waited_seconds": round(self.waited_seconds, 3),
            "throttling": self.throttling(),
        }


class RecoveryThrottles:
    """The node's throttles: ``intake`` (WAL received by recovery), ``serve`` (WAL sent to
    recovering peers), ``max_senders`` (recovery streams served at once) and ``scheduler``
    (recovering timelines at once, and who is next).

    ``active_senders`` and ``refused_senders`` are kept by the WAL port. Every setting can
    change at run time (the HTTP API's ``PATCH /v1/recovery/throttles``).
    """

    def __init__(
        self,
        *,
        intake_rate: float | None = DEFAULT_RECOVERY_MAX_RATE,
        serve_rate: float | None = DEFAULT_SERVE_MAX_RATE,
        max_senders: int = DEFAULT_MAX_SENDERS,
        max_concurrent: int = 8,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if max_senders < 1:
            raise ValueError(f"max_senders must be at least 1, got {max_senders}")
        self.intake = RateLimit(intake_rate, clock=clock)
        self.serve = RateLimit(serve_rate, clock=clock)
        self.max_senders = max_senders
        self.scheduler = RecoveryScheduler(max_concurrent, clock=clock)
        self.active_senders = 0
        self.refused_senders = 0

    def set_max_senders(self, value: int) -> None:
        """Change the cap; streams already running are never cut (``ValueError`` if < 1)."""
        if value < 1:
            raise ValueError(f"max_senders must be at least 1, got {value}")
        self.max_senders = value

    def sender_slot_free(self) -> bool:
        return self.active_senders < self.max_senders

    def to_json(self) -> dict[str, object]:
        return {
            "intake": self.intake.to_json(),
            "serve": self.serve.to_json(),
            "max_senders": self.max_senders,
            "active_senders": self.active_senders,
            "refused_senders": self.refused_senders,
            "max_concurrent": self.scheduler.limit,
            "recovering": len(self.scheduler.running),
            "waiting": self.scheduler.waiting,
        }
