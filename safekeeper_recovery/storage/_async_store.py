"""``AsyncWalStore``: a ``WalStore`` for trio, with blocking calls batched onto threads.

Writes accumulate in memory and reach the store in one thread hop once at least
``write_batch_bytes`` are buffered or the buffer reaches a segment end (so completed
segments are synced and renamed promptly); ``flush`` writes the rest and flushes in one hop.
The buffer is a list of the callers' ``bytes`` objects, handed to the store on the worker
thread (``FileWalStore.write_chunks``: one ``pwritev`` per segment; other stores: one
``write`` per chunk): no byte is copied in the trio thread (a ``bytearray`` buffer cost two
copies of every byte there, the bottleneck of a recovering node).
Reads may fetch up to ``read_ahead_bytes`` (within one segment) in one hop and serve the
following smaller reads from that cache. A reader streaming through old WAL (a peer
recovering, a node being caught up) has the next block *prefetched*: as soon as a block is
read in full, the one after it is read on a worker thread while the caller sends the
current one (reads the cache answers do not wait for the lock that prefetch holds), so
the disk and the network work at the same time (WAL is read with
``O_DIRECT``, never from the page cache, so every block is a real disk read). A reader at
the live end is served from the store's *tail* instead: the bytes of its last writes, kept
in memory under a process-wide budget (``_recent_wal.py``), with no hop and no disk read.
A store keeps a tail only while it has readers (a ``read`` within the last
``RECENT_READER_WINDOW`` seconds): one that is only written to (a node recovering, or
without standbys, archive uploads or peers reading it) holds no WAL in memory. The only
clock read is trio's, for that window, so it runs unchanged under trio's ``MockClock``.
But a thread hop leaves the run loop idle, and an *autojump* clock then jumps virtual
time forward (timeouts may fire while the disk "works"): for simulations over
``MemoryWalStore`` pass ``inline=True`` to run the calls in the trio thread.

Concurrency: callers serialise mutations (``write``/``flush``/``truncate``); the timeline
holds a lock for that. A ``trio.Lock`` inside still serialises every thread hop, because the
wrapped store is not thread-safe; a prefetch is a system task taking the same lock, so it
is one more hop in line (a truncation drops what it fetched). Thread hops are not
cancellable: a cancelled caller returns only after the blocking call finished, so the store
is never left mid-operation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, TypeVar, final

import attrs
import trio  # type: ignore[import-untyped, unused-ignore]  # trio < 0.23 has no py.typed

from ..core import Lsn
from ._recent_wal import DEFAULT_RECENT_CAP, RecentWal, RecentWalBudget, recent_wal_budget
from ._wal_store import (
    WalStore,
    check_readable,
    check_truncate_target,
    check_write_position,
    readable_length,
)

__all__ = ["AsyncWalStore", "AsyncWalStoreStatistics"]

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_WRITE_BATCH: Final = 4 << 20
DEFAULT_READ_AHEAD: Final = 4 << 20
RECENT_READER_WINDOW: Final = 60.0
"""Seconds since the last ``read`` during which a store keeps its newest writes in memory:
a standby or a recovering peer reads all the time, the archive uploader once a segment (so
a timeline writing 16 MiB a minute or more keeps its tail for it)."""
# Why 4 MiB, not 1: each hop costs the trio thread about a millisecond (the worker wakes
# and takes the GIL from it), which at 1 MiB per hop was a seventh of a recovering node's
# main-thread time. A hop of 4 MiB spends most of its time in pwritev/pread without the GIL.


@final
@attrs.frozen
class AsyncWalStoreStatistics:
    """Counters since the ``AsyncWalStore`` was built."""

    bytes_written: int
    """Bytes handed to the wrapped store."""
    flushes: int
    """Completed ``flush`` calls that had something to flush."""
    thread_hops: int
    """Batched blocking calls (run on a worker thread, or in the trio thread if inline)."""
    buffered_bytes: int
    """Bytes accepted by ``write`` but not yet handed to the store."""
    read_cache_hits: int
    """``read`` calls served from the read-ahead cache without a hop."""
    prefetches: int = 0
    """Blocks read ahead of a streaming reader (see the module docstring)."""
    recent_hits: int = 0
    """``read`` calls served from the tail of recent writes (``_recent_wal.py``)."""


@final
class AsyncWalStore:
    """Trio facade over a blocking ``WalStore``; it owns the store (``aclose`` closes it)."""

    def __init__(
        self,
        store: WalStore,
        *,
        write_batch_bytes: int = DEFAULT_WRITE_BATCH,
        read_ahead_bytes: int = DEFAULT_READ_AHEAD,
        inline: bool = False,
        prefetch: bool | None = None,
        recent_cap: int = DEFAULT_RECENT_CAP,
        recent_budget: RecentWalBudget = recent_wal_budget,
    ) -> None:
        """Wrap ``store`` (which this object then owns and closes in ``aclose``).

        ``inline=True`` runs the batched blocking calls directly in the trio thread (each
        preceded by a checkpoint) instead of on a worker thread: only for stores that never
        block, such as ``MemoryWalStore`` under a mock clock. ``prefetch`` (default: when
        not inline; a simulation wants no tasks of the store's own) reads the next block
        ahead of a streaming reader. ``recent_cap`` bytes of the newest writes are kept in
        memory for readers at the live end (0: none), within ``recent_budget``.
        """
        if write_batch_bytes <= 0 or read_ahead_bytes <= 0:
            raise ValueError("write_batch_bytes and read_ahead_bytes must be positive")
        self._store = store
        self._write_batch = write_batch_bytes
        self._read_ahead = read_ahead_bytes
        self._inline = inline
        self._lock = trio.Lock()
        self._chunks: list[bytes] = []  # accepted, not yet handed to the store, in order
        self._buffered = 0  # total length of self._chunks
        self._write_lsn = store.write_lsn  # end of accepted bytes (store + buffer)
        self._cache_start = Lsn(0)
        self._cache = b""  # durable bytes [cache_start, cache_start + len(cache))
        self._prefetch = (not inline) if prefetch is None else prefetch
        self._prefetching = False
        self._next_start = Lsn(0)
        self._next = b""  # the prefetched block after the cache: [next_start, …)
        self._prefetches = 0
        self._closed = False
        self._bytes_written = 0
        self._flushes = 0
        self._hops = 0
        self._cache_hits = 0
        self._recent = RecentWal(recent_cap, recent_budget)
        self._last_read: float | None = None  # trio time of the last read: see the window
        self._recent_hits = 0

    @property
    def store(self) -> WalStore:
        """The wrapped store (do not call it directly while this facade is in use)."""
        return self._store

    @property
    def seg_size(self) -> int:
        return self._store.seg_size

    @property
    def start_lsn(self) -> Lsn:
        return self._store.start_lsn

    @property
    def write_lsn(self) -> Lsn:
        """End of the accepted bytes, including those still buffered here."""
        return self._write_lsn

    @property
    def flush_lsn(self) -> Lsn:
        """End of the durable bytes (what ``flush`` last made durable)."""
        return self._store.flush_lsn

    def statistics(self) -> AsyncWalStoreStatistics:
        return AsyncWalStoreStatistics(
            bytes_written=self._bytes_written,
            flushes=self._flushes,
            thread_hops=self._hops,
            buffered_bytes=self._buffered,
            read_cache_hits=self._cache_hits,
            prefetches=self._prefetches,
            recent_hits=self._recent_hits,
        )

    async def _hop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a worker thread (or inline); the caller holds ``self._lock``."""
        self._hops += 1
        if self._inline:
            await trio.lowlevel.checkpoint()
            return fn()
        result: T = await trio.to_thread.run_sync(fn)
        return result

    async def _hand_over(self, then: Callable[[], T]) -> T:
        """Write all buffered chunks to the store, then run ``then``, in one hop.

        On failure the buffer is dropped and ``write_lsn`` falls back to the store's: bytes
        that were never flushed count as never written (the caller normally stops the
        timeline on a ``StorageError``).
        """
        store = self._store
        start = store.write_lsn
        chunks, self._chunks = self._chunks, []
        n, self._buffered = self._buffered, 0

        write_chunks = getattr(store, "write_chunks", None)  # FileWalStore: one pwritev

        def work() -> T:
            if write_chunks is not None:
                write_chunks(start, chunks)
            else:
                pos = start
                for chunk in chunks:
                    store.write(pos, chunk)
                    pos = pos + len(chunk)
            return then()

        try:
            result = await self._hop(work)
        except BaseException:
            self._bytes_written += int(store.write_lsn) - int(start)
            self._write_lsn = store.write_lsn
            self._recent.clear()  # what reached the store is unknown: read it from there
            raise
        self._bytes_written += n
        last = self._last_read
        if last is not None and trio.current_time() - last <= RECENT_READER_WINDOW:
            self._recent.append(start, chunks)
        elif self._recent.size:
            self._recent.clear()  # nobody read lately: give the memory back
        return result

    async def write(self, lsn: Lsn, data: bytes) -> None:
        """Accept ``data`` at ``lsn`` (which must equal ``write_lsn``); not durable yet.

        ``data`` is kept by reference until it is handed over (a ``bytes`` object cannot
        change under us; anything else is copied once). Hops to a thread only when at least
        ``write_batch_bytes`` are buffered or the buffer reaches a segment end. Raises
        ``StorageError`` on a rewrite or gap (nothing is accepted) or when handing the
        buffer over fails (see ``flush``).
        """
        async with self._lock:
            check_write_position(lsn, self._write_lsn)
            if not data:
                return
            if type(data) is not bytes:
                data = bytes(data)
            self._chunks.append(data)
            self._buffered += len(data)
            self._write_lsn = lsn + len(data)
            seg_size = self._store.seg_size
            buffer_start = int(self._write_lsn) - self._buffered
            reaches_segment_end = buffer_start // seg_size != int(self._write_lsn) // seg_size
            if self._buffered >= self._write_batch or reaches_segment_end:
                await self._hand_over(lambda: None)

    async def flush(self) -> Lsn:
        """Write the buffer and make everything durable in one hop; return ``flush_lsn``.

        When it returns, the flush position is durably recorded. Raises ``StorageError``;
        the buffer is then dropped and ``write_lsn`` falls back to the store's.
        """
        async with self._lock:
            if not self._chunks and self._store.write_lsn == self._store.flush_lsn:
                return self._store.flush_lsn
            flushed = await self._hand_over(self._store.flush)
            self._flushes += 1
            return flushed

    async def truncate(self, lsn: Lsn) -> None:
        """Crash-safe truncation to ``lsn`` in one hop; afterwards write = flush = ``lsn``.

        Buffered bytes below ``lsn`` are written first, those above are dropped; the read
        cache is invalidated. Raises ``StorageError`` if ``lsn`` is outside
        ``[start_lsn, write_lsn]`` or the truncation fails (then the store refuses writes
        until a truncation succeeds).
        """
        async with self._lock:
            check_truncate_target(lsn, self._store.start_lsn, self._write_lsn)
            self._cache = self._next = b""
            self._recent.clear()
            self._keep_buffered(max(0, int(lsn) - int(self._store.write_lsn)))
            store = self._store
            await self._hand_over(lambda: store.truncate(lsn))
            self._write_lsn = lsn

    def _keep_buffered(self, keep: int) -> None:
        """Drop buffered bytes past the first ``keep``."""
        kept: list[bytes] = []
        total = 0
        for chunk in self._chunks:
            if total + len(chunk) > keep:
                if keep > total:
                    kept.append(chunk[: keep - total])
                    total = keep
                break
            kept.append(chunk)
            total += len(chunk)
        self._chunks, self._buffered = kept, total

    async def read(self, start: Lsn, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` durable bytes from ``start``, never crossing a segment.

        Only bytes below ``flush_lsn`` are ever returned (WAL senders must not see WAL a
        crash could take back); ``b""`` when there are none yet. A hop reads ahead up to
        ``read_ahead_bytes`` and later reads inside that range are served from memory.
        Raises ``StorageError`` for ``start < start_lsn``, ``ValueError`` for
        ``max_bytes <= 0``.
        """
        check_readable(start, self._store.start_lsn, max_bytes)
        self._last_read = trio.current_time()
        # The tail of recent writes first: a reader at the live end needs no hop (R3: only
        # durable bytes are asked of it; a truncation empties it before its own hop).
        store = self._store
        n = readable_length(start, max_bytes, store.flush_lsn, store.seg_size)
        if n and (recent := self._recent.read(start, n)) is not None:
            self._recent_hits += 1
            self._recent.budget.read_from_memory_bytes += len(recent)
            return recent
        if self._lock.locked():
            # Busy (mostly: prefetching the next block). Bytes already cached need not wait
            # for that disk read: the cache only ever holds durable bytes, and a truncation
            # empties it before its own hop. Promoting the prefetched block waits.
            await trio.lowlevel.checkpoint()
            data = self._from_cache(start, max_bytes, promote=False)
            if data is not None:
                self._cache_hits += 1
                return data
        async with self._lock:
            data = self._from_cache(start, max_bytes)
            if data is not None:
                self._cache_hits += 1
                return data
            store = self._store
            if readable_length(start, max_bytes, store.flush_lsn, store.seg_size) == 0:
                return b""
            want = max(max_bytes, self._read_ahead)
            block = await self._hop(lambda: store.read(start, want))
            self._recent.budget.read_from_disk_bytes += len(block)
            self._cache_start, self._cache = start, block
            self._next = b""
            # More durable WAL after this block: a reader catching up will want it next (a
            # reader following the live end reads up to flush_lsn and gets no prefetch).
            self._prefetch_after(start + len(block))
            return self._from_cache(start, max_bytes) or b""

    def _from_cache(self, start: Lsn, max_bytes: int, *, promote: bool = True) -> bytes | None:
        """Serve from the cache or (``promote``) the prefetched block; None if neither
        holds ``start``."""
        offset = int(start) - int(self._cache_start)
        if not (self._cache and 0 <= offset < len(self._cache)):
            if not promote or not self._next or int(start) - int(self._next_start) not in range(
                    len(self._next)):
                return None
            # The reader moved on to the prefetched block: it becomes the cache, and the
            # one after it is fetched while this one is sent.
            self._cache_start, self._cache, self._next = self._next_start, self._next, b""
            self._prefetch_after(self._cache_start + len(self._cache))
            offset = int(start) - int(self._cache_start)
        data = self._cache[offset : offset + max_bytes]
        if offset + max_bytes >= len(self._cache):
            self._cache = b""  # consumed: do not hold it while the reader idles
        return data

    def _prefetch_after(self, lsn: Lsn) -> None:
        """Read the block at ``lsn`` in the background if durable WAL is there."""
        store = self._store
        if (not self._prefetch or self._prefetching or self._closed
                or readable_length(lsn, 1, store.flush_lsn, store.seg_size) == 0):
            return
        self._prefetching = True
        trio.lowlevel.spawn_system_task(self._prefetch_block, lsn,
                                        name=f"prefetch WAL at {lsn}")

    async def _prefetch_block(self, lsn: Lsn) -> None:
        # A system task (no nursery of ours to run it in): it must never raise.
        try:
            async with self._lock:
                store = self._store
                if self._closed or readable_length(lsn, 1, store.flush_lsn, store.seg_size) == 0:
                    return
                if int(self._cache_start) + len(self._cache) != int(lsn) and self._cache:
                    return  # the reader went elsewhere meanwhile
                block = await self._hop(lambda: store.read(lsn, self._read_ahead))
                self._recent.budget.read_from_disk_bytes += len(block)
                if not self._closed:
                    self._next_start, self._next = lsn, block
                    self._prefetches += 1
        except Exception as exc:  # the reader's own read will meet (and report) the fault
            log.debug("prefetch of WAL at %s failed: %s", lsn, exc)
        finally:
            self._prefetching = False

    async def remove_before(self, lsn: Lsn) -> int:
        """Remove the WAL below ``lsn`` in one hop (``WalStore.remove_before``: a segment
        start at or below ``flush_lsn``, crash-safe); return the segment files removed."""
        async with self._lock:
            store = self._store
            return await self._hop(lambda: store.remove_before(lsn))

    async def digest(self, from_lsn: Lsn, until_lsn: Lsn) -> str:
        """Hex SHA-256 of durable ``[from_lsn, until_lsn)`` in one hop (``StorageError``
        if the range is not within ``[start_lsn, flush_lsn]``)."""
        async with self._lock:
            store = self._store
            return await self._hop(lambda: store.digest(from_lsn, until_lsn))

    async def aclose(self) -> None:
        """Close the wrapped store. Buffered, never-flushed bytes are dropped, exactly as
        a crash would drop them; call ``flush`` first to keep them."""
        async with self._lock:
            self._chunks, self._buffered = [], 0
            self._write_lsn = self._store.flush_lsn
            self._cache = self._next = b""
            self._recent.clear()  # give its bytes back to the process-wide budget
            self._closed = True
            await self._hop(self._store.close)

    def __repr__(self) -> str:
        return (
            f"AsyncWalStore({self._store!r}, write={self._write_lsn}, buffered={self._buffered})"
        )
