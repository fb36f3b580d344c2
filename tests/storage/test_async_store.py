"""``AsyncWalStore``: batching of thread hops, read-ahead cache, the tail of recent writes,
same positions as the store. Tests of the disk read path turn the tail off (``recent_cap=0``):
it would serve their reads from memory."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
import trio  # type: ignore[import-untyped, unused-ignore]  # trio < 0.23 has no py.typed
import trio.testing  # type: ignore[import-untyped, unused-ignore]  # trio < 0.23 has no py.typed

from safekeeper_recovery.core import Lsn, StorageError
from safekeeper_recovery.storage import AsyncWalStore, FileWalStore, MemoryWalStore, WalStore

SEG = 1 << 20
KIB = 1 << 10


@pytest.fixture(params=["file", "memory"])
def inner(request: pytest.FixtureRequest, tmp_path: Path) -> WalStore:
    if request.param == "file":
        return FileWalStore.create(tmp_path / "tl", SEG, Lsn(0))
    return MemoryWalStore(SEG, Lsn(0))


async def test_small_writes_are_buffered_without_a_thread_hop(inner: WalStore) -> None:
    s = AsyncWalStore(inner)
    for i in range(10):
        await s.write(Lsn(i * 1000), b"x" * 1000)
    assert s.write_lsn == 10_000
    assert inner.write_lsn == 0
    stats = s.statistics()
    assert (stats.thread_hops, stats.buffered_bytes, stats.bytes_written) == (0, 10_000, 0)
    assert await s.flush() == 10_000
    assert inner.flush_lsn == 10_000
    stats = s.statistics()
    assert (stats.thread_hops, stats.flushes, stats.bytes_written) == (1, 1, 10_000)
    await s.aclose()


async def test_a_full_batch_or_a_segment_end_hands_the_buffer_over(inner: WalStore) -> None:
    s = AsyncWalStore(inner, write_batch_bytes=256 * KIB)
    await s.write(Lsn(0), b"a" * (200 * KIB))
    assert s.statistics().thread_hops == 0
    await s.write(Lsn(200 * KIB), b"a" * (100 * KIB))
    assert s.statistics().thread_hops == 1
    assert inner.write_lsn == 300 * KIB
    # 724 KiB more ends exactly at the segment end: handed over even though below a batch.
    s2 = AsyncWalStore(MemoryWalStore(SEG), write_batch_bytes=4 * SEG)
    await s2.write(Lsn(0), b"b" * (SEG - 10))
    assert s2.statistics().thread_hops == 0
    await s2.write(Lsn(SEG - 10), b"b" * 10)
    assert s2.statistics().thread_hops == 1
    await s.aclose()


async def test_rewrite_and_gap_are_refused_against_buffered_position(inner: WalStore) -> None:
    s = AsyncWalStore(inner)
    await s.write(Lsn(0), b"abc")
    with pytest.raises(StorageError, match="rewrite"):
        await s.write(Lsn(1), b"x")
    with pytest.raises(StorageError, match="gap"):
        await s.write(Lsn(4), b"x")
    await s.aclose()


async def test_reads_see_only_flushed_bytes_and_use_the_read_ahead_cache(inner: WalStore) -> None:
    s = AsyncWalStore(inner, prefetch=False, recent_cap=0)  # the cache alone
    data = bytes(range(256)) * (6 * KIB)  # 1.5 MiB
    await s.write(Lsn(0), data)
    assert await s.read(Lsn(0), 128 * KIB) == b""
    await s.flush()
    hops = s.statistics().thread_hops
    got = bytearray()
    while len(got) < len(data):
        chunk = await s.read(Lsn(len(got)), 128 * KIB)
        assert chunk
        assert len(got) // SEG == (len(got) + len(chunk) - 1) // SEG, "crossed a segment"
        got += chunk
    assert got == data
    # 12 reads of 128 KiB: one hop for segment 0 (1 MiB), one for the rest of segment 1.
    assert s.statistics().thread_hops - hops == 2
    assert s.statistics().read_cache_hits == 10
    await s.aclose()


async def test_a_streaming_reader_gets_the_next_block_prefetched(inner: WalStore) -> None:
    s = AsyncWalStore(inner, recent_cap=0)
    data = bytes(range(251)) * (14 * KIB)  # 3.4 MiB: four segments
    await s.write(Lsn(0), data)
    await s.flush()
    got = bytearray()
    while len(got) < len(data):
        chunk = await s.read(Lsn(len(got)), 128 * KIB)
        assert chunk
        got += chunk
        # Let a prefetch start, as sending would: it then holds the store's lock, so the
        # next read waits for it and is served from what it fetched.
        await trio.testing.wait_all_tasks_blocked()
    assert got == data
    stats = s.statistics()
    # Segment 0 read by the reader itself, 1-3 ahead of it; every other read from memory.
    assert stats.prefetches == 3
    assert stats.read_cache_hits == len(range(0, len(data), 128 * KIB)) - 1
    await s.aclose()


class _SlowSecondSegment:
    """A MemoryWalStore whose reads of segment 1 block (on a worker thread) until ``go``."""

    def __init__(self) -> None:
        self.inner = MemoryWalStore(SEG, Lsn(0))
        self.go = threading.Event()

    def read(self, start: Lsn, max_bytes: int) -> bytes:
        if start >= SEG:
            assert self.go.wait(30), "never released"
        return self.inner.read(start, max_bytes)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_cached_reads_do_not_wait_behind_a_prefetchs_disk_read() -> None:
    inner = _SlowSecondSegment()
    s = AsyncWalStore(inner, recent_cap=0)  # type: ignore[arg-type]  # a WalStore by delegation
    data = bytes(range(251)) * (9 * KIB)  # segment 0 and part of 1
    await s.write(Lsn(0), data)
    await s.flush()
    assert await s.read(Lsn(0), 128 * KIB) == data[:128 * KIB]
    await trio.testing.wait_all_tasks_blocked()  # the prefetch of segment 1 is stuck
    with trio.fail_after(10):  # before: every read waited for the prefetch's lock
        got = bytearray(data[:128 * KIB])
        while len(got) < SEG:
            got += await s.read(Lsn(len(got)), 128 * KIB)
    assert got == data[:SEG]
    assert s.statistics().prefetches == 0  # still stuck: all of that came from the cache
    inner.go.set()
    with trio.fail_after(10):
        assert await s.read(Lsn(SEG), 128 * KIB) == data[SEG:SEG + 128 * KIB]
    assert s.statistics().prefetches == 1
    await s.aclose()


async def test_a_truncation_drops_the_prefetched_block(inner: WalStore) -> None:
    s = AsyncWalStore(inner, recent_cap=0)
    await s.write(Lsn(0), b"1" * (2 * SEG))
    await s.flush()
    assert await s.read(Lsn(0), 10) == b"1" * 10
    await trio.testing.wait_all_tasks_blocked()  # the prefetch holds the store's lock...
    await s.flush()  # ... until it is done (flush takes the lock too)
    assert s.statistics().prefetches == 1  # segment 1 is held
    await s.truncate(Lsn(SEG + 5))
    await s.write(Lsn(SEG + 5), b"2" * 5)
    await s.flush()
    assert await s.read(Lsn(SEG), 10) == b"1" * 5 + b"2" * 5
    await s.aclose()


async def test_inline_stores_never_prefetch() -> None:
    s = AsyncWalStore(MemoryWalStore(SEG), inline=True)
    await s.write(Lsn(0), b"x" * (2 * SEG))
    await s.flush()
    await s.read(Lsn(0), 10)
    await trio.testing.wait_all_tasks_blocked()
    assert s.statistics().prefetches == 0
    await s.aclose()


async def test_truncate_drops_buffer_and_cache_and_writes_continue(inner: WalStore) -> None:
    s = AsyncWalStore(inner)
    await s.write(Lsn(0), b"1" * 1000)
    await s.flush()
    assert await s.read(Lsn(0), 10) == b"1" * 10
    await s.write(Lsn(1000), b"2" * 1000)  # buffered only
    await s.truncate(Lsn(1500))
    assert (s.write_lsn, s.flush_lsn) == (1500, 1500)
    await s.truncate(Lsn(5))
    assert (s.write_lsn, s.flush_lsn, inner.write_lsn) == (5, 5, 5)
    await s.write(Lsn(5), b"3" * 5)
    await s.flush()
    assert await s.read(Lsn(0), 100) == b"11111" + b"33333"
    with pytest.raises(StorageError, match="within"):
        await s.truncate(Lsn(11))
    await s.aclose()


async def test_digest_of_flushed_range(inner: WalStore) -> None:
    s = AsyncWalStore(inner)
    await s.write(Lsn(0), b"hello world")
    await s.flush()
    assert await s.digest(Lsn(0), Lsn(11)) == hashlib.sha256(b"hello world").hexdigest()
    with pytest.raises(StorageError, match="digest"):
        await s.digest(Lsn(0), Lsn(12))
    await s.aclose()


async def test_a_failed_hand_over_falls_back_to_the_store_position() -> None:
    inner = MemoryWalStore(SEG)
    s = AsyncWalStore(inner)
    await s.write(Lsn(0), b"x" * 10)
    inner.close()  # the store now refuses everything
    with pytest.raises(StorageError, match="closed"):
        await s.flush()
    assert s.write_lsn == 0
    assert s.statistics().buffered_bytes == 0


async def test_inline_mode_keeps_virtual_time_still_under_an_autojump_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    s = AsyncWalStore(MemoryWalStore(SEG), inline=True, recent_cap=0)
    start = trio.current_time()
    with trio.fail_after(1):  # a thread hop would idle the loop and let the clock jump
        await s.write(Lsn(0), b"z" * (2 * SEG))
        assert await s.flush() == 2 * SEG
        assert await s.read(Lsn(SEG), 4) == b"zzzz"
    assert trio.current_time() == start
    assert s.statistics().thread_hops == 3
    await s.aclose()
