"""Where a proposer's WAL comes from: a :class:`WalSource` made once the term start is known.

A source holds the WAL from some LSN on (``first`` .. ``available``) and may grow while the
proposer runs (a live PostgreSQL); ``final_end`` is set once it will grow no more, and the
proposer's run ends when that much is committed. The proposer reports its quorum commit
through :meth:`WalSource.committed` (a live server acknowledges it as flushed) and runs the
source's :meth:`WalSource.run` in its nursery; the source calls ``notify`` whenever
``available``, ``first`` or ``final_end`` changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..core import Lsn
from ._walgen import WalGenerator

__all__ = ["GeneratedWal", "WalSource", "WalSourceFactory"]


class WalSource(Protocol):
    @property
    def first(self) -> Lsn:
        """Lowest LSN still held (older WAL is fetched from peers that hold it)."""

    @property
    def available(self) -> Lsn:
        """End of the WAL held now."""

    @property
    def final_end(self) -> Lsn | None:
        """Where the WAL ends for good (None while it may still grow)."""

    def read(self, start: Lsn, end: Lsn) -> bytes:
        """WAL ``start .. end``, within ``first .. available``."""

    def committed(self, commit_lsn: Lsn) -> None:
        """The proposer's commit_lsn moved (a quorum holds WAL up to it)."""

    async def run(self, notify: Callable[[], None]) -> None:
        """Produce WAL until cancelled or done (may return); raise if the source fails."""


WalSourceFactory = Callable[[Lsn], WalSource]
"""Makes the source for a term that starts writing at the given LSN."""


class GeneratedWal:
    """``size`` bytes of deterministic WAL (``seed``) from ``start``: all available at once."""

    def __init__(self, start: Lsn, seed: int, size: int) -> None:
        self._start = start
        self._gen = WalGenerator(seed, size)
        self._end = start + size

    @property
    def first(self) -> Lsn:
        return self._start

    @property
    def available(self) -> Lsn:
        return self._end

    @property
    def final_end(self) -> Lsn:
        return self._end

    def read(self, start: Lsn, end: Lsn) -> bytes:
        return self._gen.read(start - self._start, end - start)

    def committed(self, commit_lsn: Lsn) -> None:
        pass

    async def run(self, notify: Callable[[], None]) -> None:
        return None
