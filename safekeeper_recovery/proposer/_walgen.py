"""The WAL a proposer writes (``WalSource``), and the deterministic pseudo-random kind.

A proposer learns where its WAL starts only when elected, so it takes a
:data:`WalSourceFactory`: called once with the :class:`~._election.Election`, it returns
the :class:`WalSource` for the term. :func:`wal_source_factory` picks the configured one:
``"random"`` (:class:`WalGenerator`, the library default, below) or ``"pg"`` (well-formed
PostgreSQL WAL, :class:`~safekeeper_recovery.pgwal.SyntheticWal`).

Pseudo-random WAL (``WalGenerator``): same seed, same bytes.

Byte ``i`` of the stream depends only on ``(seed, i)``, never on where the stream is placed
in the WAL, so two runs with one seed write identical bytes and a test can recompute what a
node must hold. The stream is AES-128 in counter mode over zeros, keyed by the seed, block
``b`` (1 MiB) starting at counter ``b << 64``: about 5 GB/s with AES-NI
(``random.Random.randbytes`` managed a few hundred MB/s and was 40 % of the proposer's CPU
when writing to three nodes; numpy's SFC64 about 2 GB/s, still 20 %). Not a secret: the
key is derived from the seed in the open. Recent blocks are cached because every node
reads roughly the same region: as many as fit the proposer's window, so nodes a window
apart never make a block be generated twice.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from ..core import MAX_SEND_SIZE, Lsn
from ..pgwal import continue_synthetic
from ._results import ProposerConfig

if TYPE_CHECKING:
    from ._election import Election

__all__ = [
    "BLOCK_SIZE",
    "CACHED_BLOCKS",
    "WalGenerator",
    "WalSource",
    "WalSourceFactory",
    "chunk_end",
    "wal_source_factory",
]

BLOCK_SIZE: Final = 1024 * 1024
CACHED_BLOCKS: Final = 32
"""Default cache (blocks). Nodes stream up to a window apart; with an LRU smaller than the
window their readers evict each other's blocks in turn and every block is generated once
per node (a third of the proposer's CPU when writing to three nodes)."""


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

    ``"pg"`` writes :func:`~safekeeper_recovery.pgwal.continue_synthetic` WAL with the
    greeting's segment size and system id (:meth:`ProposerConfig.pg_seg_size`,
    :meth:`ProposerConfig.pg_system_id`): it ends at the first multiple of 64 KiB at or
    after ``total_bytes`` and continues the timeline's earlier runs validly, also where a
    proposer died inside a record (the term history says where each run began).
    """
    if config.wal_format == "random":
        cached = max(CACHED_BLOCKS, config.window_bytes // BLOCK_SIZE + 8)
        return lambda _: WalGenerator(config.seed, config.total_bytes, cached_blocks=cached)

    def pg(election: Election) -> WalSource:
        return continue_synthetic(
            config.seed,
            config.total_bytes,
            election.term_start_lsn,
            [entry.lsn for entry in election.term_history],
            seg_size=config.pg_seg_size(),
            system_id=config.pg_system_id(),
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


def _zeros(n: int, _block: list[bytes] = []) -> memoryview:  # noqa: B006  # a cache
    """``n`` (at most ``BLOCK_SIZE``) zero bytes, without allocating them per block."""
    if not _block:
        _block.append(bytes(BLOCK_SIZE))
    return memoryview(_block[0])[:n]


class WalGenerator:
    """``size`` bytes of pseudo-random WAL determined by ``seed``.

    :meth:`read` returns any slice of the stream; reading past ``size`` is a ``ValueError``.
    """

    def __init__(self, seed: int, size: int, *, cached_blocks: int = CACHED_BLOCKS) -> None:
        if size < 0:
            raise ValueError(f"size must not be negative: {size}")
        self.seed = seed
        self.size = size
        self._cached_blocks = max(1, cached_blocks)
        self._key = hashlib.sha256(b"walgen" + (seed % 2**64).to_bytes(8, "little")).digest()[:16]
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def _block(self, index: int) -> bytes:
        block = self._cache.get(index)
        if block is None:
            # here: only the proposer needs it, not every node
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

            # Only the part of the block inside the stream: counter mode is sequential, so
            # a short block is a prefix of a longer one and a small stream costs its size.
            need = min(BLOCK_SIZE, self.size - index * BLOCK_SIZE)
            counter = (index << 64).to_bytes(16, "big")
            encryptor = Cipher(algorithms.AES(self._key), modes.CTR(counter)).encryptor()
            block = encryptor.update(_zeros(need))
            self._cache[index] = block
            if len(self._cache) > self._cached_blocks:
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
