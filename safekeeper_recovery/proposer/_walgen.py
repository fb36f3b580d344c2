"""Deterministic pseudo-random WAL for the test proposer: same seed, same bytes.

Byte ``i`` of the stream depends only on ``(seed, i)``, never on where the stream is placed
in the WAL, so two runs with one seed write identical bytes and a test can recompute what a
node must hold. The stream is built from 1 MiB blocks, each the raw output of numpy's SFC64
seeded with ``(seed, block)`` (several GB/s; ``random.Random.randbytes`` managed a few
hundred MB/s and was 40 % of the proposer's CPU when writing to three nodes); recent blocks
are cached because every node reads roughly the same region.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from ..core import MAX_SEND_SIZE, Lsn

__all__ = ["BLOCK_SIZE", "WalGenerator", "chunk_end"]

BLOCK_SIZE: Final = 1024 * 1024
_CACHED_BLOCKS: Final = 32
# Nodes stream up to a window (8 MiB) apart each; with an LRU of 8 blocks their readers
# evicted each other's blocks in turn and every block was generated three times (a third
# of the proposer's CPU when writing to three nodes).


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

            bits = np.random.SFC64(np.random.SeedSequence([self.seed % 2**64, index]))
            # random_raw is the bit generator's stream, stable across numpy versions.
            block = bits.random_raw(BLOCK_SIZE // 8).astype("<u8", copy=False).tobytes()
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
