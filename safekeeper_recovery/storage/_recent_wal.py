"""The newest WAL a store wrote, kept in memory for readers at the live end.

Why: WAL is written with ``O_DIRECT`` (``_direct.py``), so nothing of it stays in the page
cache, and every reader pays a disk read, however recent the bytes. Most readers are at the
live end: a standby streaming from the pg port a few commits behind, the archive uploader
reading a segment the moment it is full, a peer finishing a recovery while the proposer
writes. Their disk reads land on the same disk as the writer's ``fdatasync``\\ s and slow
them (docs/postgres-port.md measured a consumer's fsyncs 25 % slower next to our reads).
PostgreSQL's walsender reads recent WAL from its WAL buffers or the page cache; this is
ours, bounded.

Rules
-----
R1  A store's tail holds the bytes of its last successful writes, contiguous, ending at
    the end of the last one: a write that does not start where the tail ends (after a
    truncation or a failed write) starts a new tail. The chunks are the writers' own
    ``bytes`` objects, kept by reference (several small ones of one hand-over are joined
    first, so a tail of small commits is not thousands of objects).
R2  A tail holds at most ``cap`` bytes (whole chunks, oldest dropped first), and all tails
    of a :class:`RecentWalBudget` at most its ``limit`` together: when over, the tails
    that were appended to least recently are emptied first, and the one being appended to
    drops its oldest chunks last. A limit of 0 keeps nothing.
R3  The tail knows nothing of durability: the store asks it only for bytes below its
    flush position (``AsyncWalStore.read``), and empties it before a truncation.
R4  ``read`` answers only when the tail holds the whole range asked, else None (the
    caller reads the disk): an answer is never short because part of it was dropped.
R5  (``AsyncWalStore``) A store fills its tail only while it has readers, a ``read``
    within the last ``RECENT_READER_WINDOW`` (60 s), and empties it at its next write
    otherwise: a store that is only written to holds nothing here.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final, final

from ..core import Lsn

__all__ = ["DEFAULT_RECENT_CAP", "DEFAULT_RECENT_LIMIT", "RecentWal", "RecentWalBudget",
           "recent_wal_budget"]

DEFAULT_RECENT_CAP: Final = 32 << 20
"""Per store: two 16 MiB segments, so a full segment is still whole when the archive
uploader reads it while the next one fills."""
DEFAULT_RECENT_LIMIT: Final = 64 << 20
"""All stores of a process: two busy timelines at their cap, or many sharing it."""
_JOIN_BELOW: Final = 1 << 20
"""A hand-over of several chunks totalling less than this is joined into one."""


@final
class RecentWalBudget:
    """The bytes all tails of a process may hold together (R2)."""

    def __init__(self, limit: int = DEFAULT_RECENT_LIMIT) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self._limit = limit
        self._used = 0
        self._tails: OrderedDict[int, RecentWal] = OrderedDict()  # least recent first
        self.read_from_memory_bytes = 0
        """WAL bytes the stores of this budget answered from their tails."""
        self.read_from_disk_bytes = 0
        """WAL bytes they read from their stores instead (reads and prefetches)."""

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self._limit = limit
        self._shrink(None)

    @property
    def used(self) -> int:
        """Bytes held by all tails now."""
        return self._used

    def _grew(self, tail: RecentWal, n: int) -> None:
        self._used += n
        self._tails[id(tail)] = tail
        self._tails.move_to_end(id(tail))
        self._shrink(tail)

    def _shrank(self, tail: RecentWal, n: int) -> None:
        self._used -= n
        if tail.size == 0:
            self._tails.pop(id(tail), None)

    def _shrink(self, appending: RecentWal | None) -> None:
        while self._used > self._limit and self._tails:
            oldest = next(iter(self._tails.values()))
            if oldest is appending and len(self._tails) > 1:
                self._tails.move_to_end(id(oldest))  # the others go first
                continue
            if oldest is appending:
                oldest.drop_oldest(self._used - self._limit)
            else:
                oldest.clear()


recent_wal_budget: Final = RecentWalBudget()
"""The process-wide budget every ``AsyncWalStore`` shares unless given its own (the node
sets its limit from ``--wal-memory``)."""


@final
class RecentWal:
    """One store's tail (R1-R4)."""

    def __init__(self, cap: int = DEFAULT_RECENT_CAP,
                 budget: RecentWalBudget = recent_wal_budget) -> None:
        if cap < 0:
            raise ValueError("cap must be >= 0")
        self._cap = cap
        self._budget = budget
        self._starts: list[int] = []  # start LSN of each chunk, ascending
        self._chunks: list[bytes] = []
        self._first = 0  # chunks before this index were dropped (compacted lazily)
        self._size = 0
        self._end = 0

    @property
    def budget(self) -> RecentWalBudget:
        """The budget this tail is counted in (and its stores' read counters)."""
        return self._budget

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._size

    @property
    def start(self) -> Lsn:
        """The first byte held (== ``end`` when empty)."""
        return Lsn(self._starts[self._first]) if self._size else Lsn(self._end)

    @property
    def end(self) -> Lsn:
        return Lsn(self._end)

    def append(self, lsn: Lsn, chunks: Sequence[bytes]) -> None:
        """The bytes ``chunks`` were written at ``lsn`` (R1, R2)."""
        total = sum(len(c) for c in chunks)
        if total == 0:
            return
        if self._size and int(lsn) != self._end:
            self.clear()
        if self._cap == 0 or self._budget.limit == 0:
            self._end = int(lsn) + total
            return
        if len(chunks) > 1 and total < _JOIN_BELOW:
            chunks = [b"".join(chunks)]
        pos = int(lsn)
        for chunk in chunks:
            self._starts.append(pos)
            self._chunks.append(chunk)
            pos += len(chunk)
        self._end = pos
        self._size += total
        over = self._size - self._cap
        if over > 0:
            self.drop_oldest(over)
        self._budget._grew(self, total)  # drop_oldest already released what it dropped

    def drop_oldest(self, nbytes: int) -> None:
        """Drop whole chunks from the oldest until at least ``nbytes`` are gone."""
        dropped = 0
        while dropped < nbytes and self._first < len(self._chunks):
            dropped += len(self._chunks[self._first])
            self._chunks[self._first] = b""
            self._first += 1
        if self._first > 64 and self._first * 2 > len(self._chunks):
            del self._starts[:self._first], self._chunks[:self._first]
            self._first = 0
        self._size -= dropped
        if self._first == len(self._chunks):
            self._starts.clear()
            self._chunks.clear()
            self._first = 0
        self._budget._shrank(self, dropped)

    def clear(self) -> None:
        """Hold nothing (the end stays: the next write there continues it)."""
        size = self._size
        self._starts.clear()
        self._chunks.clear()
        self._first = self._size = 0
        self._budget._shrank(self, size)

    def read(self, start: Lsn, n: int) -> bytes | None:
        """The ``n`` bytes from ``start`` if all are held, else None (R4)."""
        begin, stop = int(start), int(start) + n
        if n <= 0 or not self._size or begin < self._starts[self._first] or stop > self._end:
            return None
        i = bisect.bisect_right(self._starts, begin, self._first) - 1
        offset = begin - self._starts[i]
        chunk = self._chunks[i]
        if offset + n <= len(chunk):
            return chunk[offset:offset + n]
        parts = [memoryview(chunk)[offset:]]
        got = len(chunk) - offset
        while got < n:
            i += 1
            chunk = self._chunks[i]
            parts.append(memoryview(chunk)[:n - got])
            got += len(parts[-1])
        return b"".join(parts)
