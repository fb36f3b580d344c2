"""WAL made available at a steady rate: :class:`PacedWal`.

A real server's WAL arrives over time, not all at once; a test that wants a proposer to
*still be streaming* when something else happens (a node rejoining, a recovery starting)
needs the same shape from the generated WAL. :class:`PacedWal` wraps a fixed
:class:`~._walgen.WalSource` as a :class:`~._source.StreamingWalSource` whose ``available``
end grows by ``rate`` bytes per second, in steps of ``interval`` seconds, until the whole
source is out. ``propose --rate`` and the simulator's live phase use it.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from ..core import Lsn
from ._source import AnyWalSourceFactory
from ._walgen import WalSource, WalSourceFactory

__all__ = ["PacedWal", "paced"]


class PacedWal:
    """``wal`` placed at ``start``, released at ``rate`` bytes/s (see the module doc)."""

    def __init__(self, wal: WalSource, start: Lsn, rate: float, *,
                 interval: float = 0.1) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self._wal = wal
        self._start = start
        self._end = Lsn(start + wal.size)
        self._available = start
        self._rate = rate
        self._interval = interval

    @property
    def first(self) -> Lsn:
        return self._start

    @property
    def available(self) -> Lsn:
        return self._available

    @property
    def final_end(self) -> Lsn:
        return self._end  # known from the start: only its release is paced

    def read_wal(self, start: Lsn, end: Lsn) -> bytes:
        return self._wal.read(start - self._start, end - start)

    def committed(self, commit_lsn: Lsn) -> None:
        pass

    def _released_by(self, elapsed: float) -> int:
        """Bytes out after ``elapsed`` seconds of :meth:`run` (before capping at the end):
        ``rate`` per second of the clock, so a step that overslept catches up."""
        return int(elapsed * self._rate)

    def _on_release(self, end: Lsn, at: float) -> None:
        """Called after each step with the new ``available`` end and the step's
        ``trio.current_time`` (a subclass times pieces from it; here nothing)."""

    async def run(self, notify: Callable[[], None]) -> None:
        began = trio.current_time()
        while self._available < self._end:
            await trio.sleep(self._interval)
            now = trio.current_time()
            self._available = Lsn(min(self._end, self._start + self._released_by(now - began)))
            self._on_release(self._available, now)
            notify()


def paced(make: WalSourceFactory, rate: float) -> AnyWalSourceFactory:
    """A source factory releasing what ``make`` builds at ``rate`` bytes/s."""
    return lambda election: PacedWal(make(election), election.term_start_lsn, rate)
