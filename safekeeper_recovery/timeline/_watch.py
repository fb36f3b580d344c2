"""A change notification: waiters re-check their condition after every change."""

from __future__ import annotations

from collections.abc import Callable

import trio

__all__ = ["Watch"]


class Watch:
    """Version counter plus an Event swapped on each change (a tokio ``watch`` for trio).

    Single-threaded trio makes "check, then wait" race-free: nothing can change between a
    waiter's check and its ``await`` of the current event.
    """

    def __init__(self, on_notify: Callable[[], None] | None = None) -> None:
        self.version = 0
        self._event = trio.Event()
        self._on_notify = on_notify
        """Called after every :meth:`notify` (a node-wide change feed hooks in here)."""

    def notify(self) -> None:
        self.version += 1
        self._event.set()
        self._event = trio.Event()
        if self._on_notify is not None:
            self._on_notify()

    async def wait_changed(self) -> None:
        """Block until the next :meth:`notify`."""
        await self._event.wait()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Block until ``predicate()`` holds (checked now and after every change)."""
        while not predicate():
            await self._event.wait()
