"""The WAL a proposer writes (``WalSource``), and the deterministic pseudo-random kind.

A proposer learns where its WAL starts only when elected, so it takes a
:data:`WalSourceFactory`: called once with the :class:`~._election.Election`, it returns
the :class:`WalSource` for the term. :func:`wal_source_factory` picks the configured one:
``"random"`` (:class:`WalGenerator`, the library default, below) or ``"pg"`` (well-formed
PostgreSQL WAL, :class:`~safekeeper_recovery.pgwal.SyntheticWal`).

Pseudo-random WAL (``WalGenerator``): same seed, same bytes.

Byte ``i`` of the stream depends only on ``(seed, i)``, never on where the stream is placed
in the WAL, so two runs with one seed write identical bytes and a test can recompute what a
node must hold. The stream is built from 1 MiB blocks, each the raw output of numpy's SFC64
seeded with ``(seed, block)`` (several GB/s; ``random.Random.randbytes`` managed a few
hundred MB/s and was 40 % of the proposer's CPU when writing to three nodes); recent blocks
are cached because every node reads roughly the same region.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from ..core import MAX_SEND_SIZE, Lsn
from ..pgwal import SyntheticWal, continuation_prev_lsn
from ._results import ProposerConfig

if TYPE_CHECKING:
    from ._election import Election

__all__ = [
    "BLOCK_SIZE",
    "WalGenerator",
    "WalSource",
    "WalSourceFactory",
    "chunk_end",
    "wal_source_factory",
]

BLOCK_SIZE: Final = 1024 * 1024
_CACHED_BLOCKS: Final = 32
# Nodes stream up to a window (8 MiB) apart each; with an LRU of 8 blocks their readers
# evicted each other's blocks in turn and every block was generated three times (a third
# of the proposer's CPU when writing to three nodes).


class WalSource(Protocol):
    """The WAL one proposer run writes: ``size`` bytes from its term start LSN on.

    ``read(offset, length)`` returns bytes ``term_start + offset ..`` (``offset + length <=
    size``); the proposer reads each region once per node, in order per node, in pieces of
    at most ``MAX_SEND_SIZE`` that never cross a segment, so a source should serve recent
    regions cheaply. It is called from the trio thread and must not block for long.
    """

    @property
    def size(self) -> int:
        """Bytes in this run (the proposer writes term_start .. term_start + size)."""
        ...

    def read(self, offset: int, length: int) -> bytes: ...


WalSourceFactory = Callable[["Election"], WalSource]
"""Builds the run's :class:`WalSource` once elected; ``ValueError`` means "cannot write
from this start" (the run stops with a ``ProposerError`` saying why)."""


def wal_source_factory(config: ProposerConfig) -> WalSourceFactory:
    """The source ``config.wal_format`` asks for, of ``config.total_bytes`` and seeded.

    ``"pg"`` writes :class:`~safekeeper_recovery.pgwal.SyntheticWal` with the greeting's
    segment size and system id (:meth:`ProposerConfig.pg_seg_size`,
    :meth:`ProposerConfig.pg_system_id`), chaining ``xl_prev`` to the previous run's
    trailer unless the term starts at the timeline's start (its first history entry).
    """
    if config.wal_format == "random":
        return lambda _: WalGenerator(config.seed, config.total_bytes)

    def pg(election: Election) -> WalSource:
        start = election.term_start_lsn
        timeline_start = election.term_history[0].lsn if election.term_history else start
        return SyntheticWal(
            config.seed,
            start,
            config.total_bytes,
            seg_size=config.pg_seg_size(),
            system_id=config.pg_system_id(),
            prev_lsn=continuation_prev_lsn(start, timeline_start),
        )

    return pg


def chunk_end(lsn: Lsn, end: Lsn) -> Lsn:
    """End of the append that starts at ``lsn``: at most ``MAX_SEND_SIZE`` bytes, stopping at
    the next multiple of ``MAX_SEND_SIZE``.

    Segment sizes are powers of two of at least 1 MiB, so an aligned chunk never crosses a
    segment boundary (DESIGN.md: "chunks … never cross a segment").
    """
    boundary = (int(lsn) // MAX_SEND_SIZE + 1) * MAX_SEND_SIZE
    return Lsn(min(int(end), boundary))


class WalGenerator:
    """``size`` bytes of pseudo-random WAL determined by ``seed``.

    :meth:`read` returns any slice of the stream; reading past ``size`` is a ``ValueError``.
    """

    def __init__(self, seed: int, size: int) -> None:
        if size < 0:
            raise ValueError(f"size must not be negative: {size}")
        self.seed = seed
        self.size = size
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def _block(self, index: int) -> bytes:
        block = self._cache.get(index)
        if block is None:
            import numpy as np  # here: only the proposer needs it, not every node

            # Only the part of the block inside the stream: the bit generator's raw stream
            # is sequential, so a short draw is a prefix of a longer one and a small stream
            # costs its size, not 1 MiB. random_raw is stable across numpy versions.
            need = min(BLOCK_SIZE, self.size - index * BLOCK_SIZE)
            bits = np.random.SFC64(np.random.SeedSequence([self.seed % 2**64, index]))
            raw = bits.random_raw(-(-need // 8)).astype("<u8", copy=False).tobytes()
            block = raw[:need]
            self._cache[index] = block
            if len(self._cache) > _CACHED_BLOCKS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(index)
        return block

    def read(self, offset: int, length: int) -> bytes:
        """Bytes ``offset .. offset + length`` of the stream."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(
                f"read of {length} bytes at {offset} outside the stream of {self.size} bytes"
            )
        parts: list[bytes] = []
        pos, stop = offset, offset + length
        while pos < stop:
            index, within = divmod(pos, BLOCK_SIZE)
            take = min(stop - pos, BLOCK_SIZE - within)
            parts.append(self._block(index)[within : within + take])
            pos += take
        return b"".join(parts)
