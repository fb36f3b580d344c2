"""Waiting on a condition with a deadline (never sleeping for luck)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

__all__ = ["WaitTimeout", "wait_until"]


class WaitTimeout(AssertionError):
    """:func:`wait_until` ran out of time (an ``AssertionError``: a failed test)."""


async def wait_until(
    predicate: Callable[[], Awaitable[bool] | bool],
    timeout: float,
    *,
    message: str = "condition",
    poll: float = 0.05,
) -> None:
    """Evaluate ``predicate`` (plain or async) every ``poll`` seconds until it is true.

    Raises :class:`WaitTimeout` naming ``message`` after ``timeout`` seconds of trio's
    clock (virtual time under an autojump clock). Use it where nothing can be waited on
    directly (another process's state, a status without a change event).
    """
    with trio.move_on_after(timeout):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await trio.sleep(poll)
    raise WaitTimeout(f"timed out after {timeout}s waiting for {message}")
