"""WAL that grows while the proposer runs: :class:`StreamingWalSource`.

A fixed :class:`~._walgen.WalSource` (``size`` bytes, known when elected) is the common
case; a live PostgreSQL is not: its WAL arrives while the run goes on and its end is known
only when the run is told to stop. A streaming source holds the WAL from some LSN on
(``first .. available``), sets ``final_end`` once it will grow no more, and the proposer's
run ends when that much is committed. The proposer reports its quorum commit through
:meth:`StreamingWalSource.committed` (a live server acknowledges it as flushed) and runs
:meth:`StreamingWalSource.run` in its nursery; the source calls ``notify`` whenever
``available``, ``first`` or ``final_end`` changes. :func:`as_streaming` presents a fixed
source the same way, so the proposer has one streaming path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..core import Lsn
from ._walgen import WalSource

if TYPE_CHECKING:
    from ._election import Election

__all__ = ["AnyWalSourceFactory", "FixedWal", "StreamingWalSource", "as_streaming"]


@runtime_checkable
class StreamingWalSource(Protocol):
    @property
    def first(self) -> Lsn:
        """Lowest LSN still held (older WAL is fetched from peers that hold it, rule P3)."""
        ...

    @property
    def available(self) -> Lsn:
        """End of the WAL held now."""
        ...

    @property
    def final_end(self) -> Lsn | None:
        """Where the WAL ends for good (None while it may still grow)."""
        ...

    def read_wal(self, start: Lsn, end: Lsn) -> bytes:
        """WAL ``start .. end``, within ``first .. available``."""
        ...

    def committed(self, commit_lsn: Lsn) -> None:
        """The proposer's commit_lsn moved (a quorum holds WAL up to it)."""
        ...

    async def run(self, notify: Callable[[], None]) -> None:
        """Produce WAL until cancelled or done (may return); raise if the source fails."""
        ...


AnyWalSourceFactory = Callable[["Election"], "WalSource | StreamingWalSource"]
"""Builds the run's WAL once elected: fixed-size or streaming."""


class FixedWal:
    """A fixed :class:`WalSource` placed at ``start``: everything available at once."""

    def __init__(self, wal: WalSource, start: Lsn) -> None:
        self._wal = wal
        self._start = start
        self._end = start + wal.size

    @property
    def first(self) -> Lsn:
        return self._start

    @property
    def available(self) -> Lsn:
        return self._end

    @property
    def final_end(self) -> Lsn:
        return self._end

    def read_wal(self, start: Lsn, end: Lsn) -> bytes:
        return self._wal.read(start - self._start, end - start)

    def committed(self, commit_lsn: Lsn) -> None:
        pass

    async def run(self, notify: Callable[[], None]) -> None:
        return None


def as_streaming(source: WalSource | StreamingWalSource, start: Lsn) -> StreamingWalSource:
    """``source`` as a streaming source (a fixed one starts at ``start``)."""
    if isinstance(source, StreamingWalSource):
        return source
    return FixedWal(source, start)
