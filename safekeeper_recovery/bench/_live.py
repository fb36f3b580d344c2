"""A live proposer's write latency: WAL released at a steady pace, each piece timed to commit.

Rules:

1. :class:`TimedWal` is a ``StreamingWalSource`` (``proposer/_source.py``): the proposer's
   :class:`~safekeeper_recovery.proposer.PacedWal`, releasing ``piece`` bytes of the
   wrapped source per step of ``interval`` seconds, as a database writing steadily would
   (one piece per step, not per ``interval`` of the clock: a step that overslept on a
   busy machine releases one piece, not a burst), and remembering when each piece became
   available.
2. The latency of a piece is the time from its release to the proposer's quorum commit
   reaching its end (``committed``, called by the proposer): what a client of a
   synchronous-commit database would wait. Both instants are read from ``trio.current_time``.
3. Latencies are kept with their release time, so a caller reads those of a window
   (:meth:`TimedWal.latencies`) — e.g. only pieces released while a mass recovery ran.
4. ``final_end`` is fixed (the wrapped source's size); a run that must end earlier is
   cancelled by its caller.
"""

from __future__ import annotations

from collections import deque

import trio

from ..core import Lsn
from ..proposer import PacedWal, WalSource

__all__ = ["TimedWal"]


class TimedWal(PacedWal):
    """``wal`` placed at ``start``, released ``piece`` bytes per ``interval`` (rule 1)."""

    def __init__(self, wal: WalSource, start: Lsn, *, piece: int, interval: float) -> None:
        if piece <= 0 or interval <= 0:
            raise ValueError("piece and interval must be positive")
        super().__init__(wal, start, piece / interval, interval=interval)
        self._piece = piece
        self._pending: deque[tuple[Lsn, float]] = deque()  # (piece end, released at)
        self._done: list[tuple[float, float]] = []  # (released at, latency)

    def _released_by(self, elapsed: float) -> int:
        return int(self._available) - int(self._start) + self._piece  # one piece per step

    def _on_release(self, end: Lsn, at: float) -> None:
        self._pending.append((end, at))

    def committed(self, commit_lsn: Lsn) -> None:
        now = trio.current_time()
        while self._pending and self._pending[0][0] <= commit_lsn:
            _end, released = self._pending.popleft()
            self._done.append((released, now - released))

    def latencies(self, since: float = float("-inf"), until: float = float("inf")
                  ) -> list[float]:
        """Seconds from release to commit of the pieces released in ``[since, until)``
        (``trio.current_time`` clock) and committed by now (rule 3)."""
        return [latency for released, latency in self._done if since <= released < until]
