"""Which timelines changed since a cursor: the node-wide change feed a sidecar long-polls.

In-process waiters use each timeline's :class:`Watch`. A sidecar cannot: it used to poll
every timeline's status every 0.5 s (2 requests a second per timeline, 20,000 a second at
10,000 timelines, the polling cost the event-driven design exists to avoid). Instead it
holds one long poll on ``GET /v1/timelines/changes?session=S&after=N``, answered as soon as
any timeline changed after the cursor (or at the poll's timeout), naming the ones that did.

Cursor and session
------------------
Every change takes the next sequence number. The cursor is ``(session, seq)``; ``session``
is random per :class:`ChangeFeed` (so per node process), so a restarted node, whose numbers
start again at 0, answers a cursor of its previous life with ``reset``. ``reset`` means
"re-read everything": the client lists the timelines and re-checks them all.

Cost
----
:meth:`ChangeFeed.record` runs on every processed WAL message, so it is O(1) and allocates
nothing while nobody waits: each live timeline keeps the number of its last change in an
insertion-ordered dict, moved to the end on every change. The changes after a cursor are
read from the end backwards until an older number, O(changed). Deletions are kept in a
bounded deque; a cursor older than the oldest deletion that was dropped gets ``reset``.
"""

from __future__ import annotations

import collections
import secrets

import attrs
import trio

from ..core import TenantTimelineId

__all__ = ["ChangeFeed", "Changes"]

MAX_DELETIONS_KEPT = 10_000


@attrs.frozen
class Changes:
    """The answer to "what changed after my cursor?"."""

    session: str
    cursor: int
    """Pass it back (with ``session``) to hear of the changes after this answer."""
    changed: tuple[TenantTimelineId, ...]
    """Live timelines changed after the cursor (created ones included), newest first."""
    deleted: tuple[TenantTimelineId, ...]
    """Timelines deleted after the cursor."""
    reset: bool
    """The cursor cannot be answered (another session, too old, or none given): the
    client must re-list the timelines and re-check all of them."""

    @property
    def empty(self) -> bool:
        return not (self.changed or self.deleted or self.reset)


class ChangeFeed:
    """Node-wide change numbering of timelines (see the module docstring)."""

    def __init__(self, *, max_deletions: int = MAX_DELETIONS_KEPT,
                 session: str | None = None) -> None:
        self.session = session if session is not None else secrets.token_hex(8)
        self.seq = 0
        self._last: dict[TenantTimelineId, int] = {}
        self._deletions: collections.deque[tuple[int, TenantTimelineId]] = collections.deque(
            maxlen=max_deletions)
        self._deletion_floor = 0
        """Seq of the newest deletion dropped from the deque: older cursors are reset."""
        self._waiters = 0
        self._wake = trio.Event()

    def record(self, ttid: TenantTimelineId) -> None:
        """``ttid`` changed (or was created or loaded)."""
        self.seq += 1
        # Re-insert to move it to the end: dict order is the order of last change.
        self._last.pop(ttid, None)
        self._last[ttid] = self.seq
        self._notify()

    def record_deleted(self, ttid: TenantTimelineId) -> None:
        """``ttid`` was deleted."""
        self.seq += 1
        self._last.pop(ttid, None)
        if len(self._deletions) == self._deletions.maxlen:
            self._deletion_floor = self._deletions[0][0]
        self._deletions.append((self.seq, ttid))
        self._notify()

    def _notify(self) -> None:
        if self._waiters:
            self._wake.set()
            self._wake = trio.Event()

    def since(self, session: str | None, cursor: int) -> Changes:
        """What changed after ``(session, cursor)``; never blocks."""
        if session != self.session or not self._deletion_floor <= cursor <= self.seq:
            return Changes(self.session, self.seq, (), (), reset=True)
        changed: list[TenantTimelineId] = []
        for ttid in reversed(self._last):
            if self._last[ttid] <= cursor:
                break
            changed.append(ttid)
        deleted: list[TenantTimelineId] = []
        for seq, ttid in reversed(self._deletions):
            if seq <= cursor:
                break
            deleted.append(ttid)
        return Changes(self.session, self.seq, tuple(changed), tuple(deleted), reset=False)

    async def wait_since(self, session: str | None, cursor: int, timeout: float) -> Changes:
        """:meth:`since`, but wait up to ``timeout`` seconds for something to report.

        Returns at once if anything changed after the cursor (or it must be reset);
        otherwise on the next change, or with nothing changed once the time is up.
        """
        with trio.move_on_after(timeout):
            while self.since(session, cursor).empty:
                self._waiters += 1
                try:
                    await self._wake.wait()
                finally:
                    self._waiters -= 1
        return self.since(session, cursor)

    def statistics(self) -> dict[str, int]:
        return {"seq": self.seq, "timelines": len(self._last), "waiters": self._waiters,
                "deletions_kept": len(self._deletions)}
