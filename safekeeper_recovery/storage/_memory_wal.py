"""``MemoryWalStore``: the in-memory twin of ``FileWalStore`` for tests and simulation."""

from __future__ import annotations

import hashlib
from typing import final

from ..core import INVALID_LSN, Lsn, StorageError
from ._removal import check_removal_target
from ._wal_store import (
    check_digest_range,
    check_readable,
    check_truncate_target,
    check_write_position,
    readable_length,
    validate_seg_size,
)

__all__ = ["MemoryWalStore"]


@final
class MemoryWalStore:
    """A ``WalStore`` in a ``bytearray``, with the same position rules as the file store.

    ``crash()`` models a power loss: it returns a new store holding only flushed bytes.
    A truncation completes atomically here, so "pending truncation" never arises.
    """

    def __init__(self, seg_size: int, start_lsn: Lsn = INVALID_LSN) -> None:
        """A brand-new store: write = flush = ``start_lsn``. ``ValueError`` on a bad size."""
        self._seg_size = validate_seg_size(seg_size)
        self._start_lsn = start_lsn
        self._data = bytearray()  # bytes [start_lsn, write_lsn)
        self._flush_lsn = start_lsn
        self._closed = False

    @property
    def seg_size(self) -> int:
        return self._seg_size

    @property
    def start_lsn(self) -> Lsn:
        return self._start_lsn

    @property
    def write_lsn(self) -> Lsn:
        return self._start_lsn + len(self._data)

    @property
    def flush_lsn(self) -> Lsn:
        return self._flush_lsn

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageError("memory WAL store is closed")

    def write(self, lsn: Lsn, data: bytes) -> None:
        self._check_usable()
        check_write_position(lsn, self.write_lsn)
        self._data += data

    def flush(self) -> Lsn:
        self._check_usable()
        self._flush_lsn = self.write_lsn
        return self._flush_lsn

    def truncate(self, lsn: Lsn) -> None:
        self._check_usable()
        check_truncate_target(lsn, self._start_lsn, self.write_lsn)
        del self._data[int(lsn) - int(self._start_lsn) :]
        self._flush_lsn = lsn

    def remove_before(self, lsn: Lsn) -> int:
        """See ``WalStore.remove_before``: the count is of segments wholly or partly
        dropped (the twin has no files)."""
        self._check_usable()
        check_removal_target(lsn, self._flush_lsn, self._seg_size)
        if lsn <= self._start_lsn:
            return 0
        removed = lsn.segment_number(self._seg_size) - self._start_lsn.segment_number(
            self._seg_size)
        del self._data[: int(lsn) - int(self._start_lsn)]
        self._start_lsn = lsn
        return removed

    def read(self, start: Lsn, max_bytes: int) -> bytes:
        self._check_usable()
        check_readable(start, self._start_lsn, max_bytes)
        n = readable_length(start, max_bytes, self._flush_lsn, self._seg_size)
        offset = int(start) - int(self._start_lsn)
        return bytes(self._data[offset : offset + n])

    def digest(self, from_lsn: Lsn, until_lsn: Lsn) -> str:
        self._check_usable()
        check_digest_range(from_lsn, until_lsn, self._start_lsn, self._flush_lsn)
        base = int(self._start_lsn)
        return hashlib.sha256(self._data[int(from_lsn) - base : int(until_lsn) - base]).hexdigest()

    def close(self) -> None:
        """Mark the store closed (further calls raise ``StorageError``). Idempotent."""
        self._closed = True

    def crash(self) -> MemoryWalStore:
        """A new store as after a power loss: only bytes below ``flush_lsn`` survive.

        Works on a closed store too (that is how a "reopen" is modelled).
        """
        survivor = MemoryWalStore(self._seg_size, self._start_lsn)
        survivor._data[:] = self._data[: int(self._flush_lsn) - int(self._start_lsn)]
        survivor._flush_lsn = self._flush_lsn
        return survivor

    def __repr__(self) -> str:
        return (
            f"MemoryWalStore(start={self._start_lsn}, write={self.write_lsn}, "
            f"flush={self._flush_lsn})"
        )
