"""The tail of recent writes (``storage/_recent_wal.py`` R1-R4) and ``AsyncWalStore``
serving live-end readers from it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio.testing  # type: ignore[import-untyped, unused-ignore]  # trio < 0.23 has no py.typed

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.storage import (
    AsyncWalStore,
    FileWalStore,
    MemoryWalStore,
    RecentWal,
    RecentWalBudget,
)
from safekeeper_recovery.storage._async_store import RECENT_READER_WINDOW

SEG = 1 << 20
KIB = 1 << 10


def test_a_tail_answers_whole_ranges_across_chunks_and_nothing_it_does_not_hold() -> None:
    tail = RecentWal(cap=1 << 20, budget=RecentWalBudget(1 << 20))
    tail.append(Lsn(1000), [b"a" * 600 * KIB, b"b" * 600 * KIB])  # large: kept as they are
    # The cap (1 MiB) dropped the oldest whole chunk: only "b" is left.
    assert (tail.start, tail.end, tail.size) == (1000 + 600 * KIB, 1000 + 1200 * KIB, 600 * KIB)
    assert tail.read(Lsn(1000), 10) is None
    start = 1000 + 600 * KIB
    assert tail.read(Lsn(start), 3) == b"bbb"
    tail.append(Lsn(start + 600 * KIB), [b"c" * 10, b"d" * 10])  # small: joined into one
    assert tail.read(Lsn(start + 600 * KIB - 2), 14) == b"bb" + b"c" * 10 + b"dd"
    assert tail.read(Lsn(start + 600 * KIB + 15), 6) is None  # runs past the end (R4)
    assert tail.read(Lsn(start), 0) is None


def test_a_write_elsewhere_starts_a_new_tail() -> None:
    tail = RecentWal(cap=1 << 20, budget=RecentWalBudget(1 << 20))
    tail.append(Lsn(0), [b"x" * 100])
    tail.append(Lsn(50), [b"y" * 10])  # after a truncation to 50
    assert (tail.start, tail.end) == (50, 60)
    assert tail.read(Lsn(0), 1) is None
    assert tail.read(Lsn(50), 10) == b"y" * 10


def test_the_budget_empties_the_least_recently_written_tails_first() -> None:
    budget = RecentWalBudget(300)
    a, b, c = (RecentWal(cap=1000, budget=budget) for _ in range(3))
    a.append(Lsn(0), [b"a" * 100])
    b.append(Lsn(0), [b"b" * 100])
    c.append(Lsn(0), [b"c" * 100])
    a.append(Lsn(100), [b"a" * 50])  # a is now the most recent writer: b goes first
    assert (a.size, b.size, c.size, budget.used) == (150, 0, 100, 250)
    a.append(Lsn(150), [b"a" * 100])
    assert (a.size, b.size, c.size, budget.used) == (250, 0, 0, 250)
    a.append(Lsn(250), [b"a" * 100])  # alone: its own oldest chunks go
    assert (a.size, budget.used) == (250, 250)
    assert a.read(Lsn(100), 250) == b"a" * 250
    budget.limit = 0
    assert (a.size, budget.used) == (0, 0)
    a.append(Lsn(350), [b"a"])  # a limit of 0 keeps nothing
    assert (a.size, a.read(Lsn(350), 1)) == (0, None)


async def test_a_reader_at_the_live_end_is_served_from_memory_with_no_hop(tmp_path: Path) -> None:
    budget = RecentWalBudget()
    s = AsyncWalStore(FileWalStore.create(tmp_path / "tl", SEG, Lsn(0)), recent_budget=budget)
    assert await s.read(Lsn(0), 1) == b""  # a reader is here (R5)
    pos = 0
    for i in range(50):
        commit = bytes([i]) * (3 * KIB + i)
        await s.write(Lsn(pos), commit)
        assert await s.read(Lsn(pos), 64 * KIB) == b""  # not durable yet
        await s.flush()
        hops = s.statistics().thread_hops
        assert await s.read(Lsn(pos), 64 * KIB) == commit
        assert s.statistics().thread_hops == hops
        pos += len(commit)
    assert s.statistics().recent_hits == 50
    assert budget.used == pos
    await s.aclose()
    assert budget.used == 0  # closing gives the bytes back


async def test_a_truncated_tail_never_serves_the_old_bytes(tmp_path: Path) -> None:
    s = AsyncWalStore(FileWalStore.create(tmp_path / "tl", SEG, Lsn(0)),
                      recent_budget=RecentWalBudget())
    await s.write(Lsn(0), b"o" * 10 * KIB)
    await s.flush()
    assert await s.read(Lsn(4 * KIB), KIB) == b"o" * KIB
    await s.truncate(Lsn(4 * KIB))
    await s.write(Lsn(4 * KIB), b"n" * 2 * KIB)
    await s.flush()
    assert await s.read(Lsn(3 * KIB), 8 * KIB) == b"o" * KIB + b"n" * 2 * KIB
    assert await s.read(Lsn(6 * KIB), KIB) == b""
    await s.aclose()


@pytest.mark.parametrize("seed", range(20))
async def test_reads_always_match_the_store_under_writes_truncations_and_eviction(
        seed: int) -> None:
    """Random writes, flushes, truncations and reads through a tiny tail and budget (so
    chunks are dropped and tails emptied all the time): every read equals what the store
    itself holds."""
    rng = random.Random(seed)
    budget = RecentWalBudget(rng.choice([0, 3 * KIB, 40 * KIB, 300 * KIB]))
    stores = [AsyncWalStore(MemoryWalStore(SEG, Lsn(0)), inline=True,
                            recent_cap=rng.choice([KIB, 8 * KIB, 200 * KIB]),
                            recent_budget=budget) for _ in range(2)]
    for _ in range(400):
        s = rng.choice(stores)
        op = rng.random()
        if op < 0.45:
            n = rng.choice([1, 17, 500, 3000, 9000, 150 * KIB])
            await s.write(s.write_lsn, rng.randbytes(n))
        elif op < 0.6:
            await s.flush()
        elif op < 0.65:
            await s.truncate(Lsn(rng.randint(int(s.flush_lsn) // 2, int(s.write_lsn))))
        else:
            flush = int(s.flush_lsn)
            start = Lsn(rng.randint(max(0, flush - 20 * KIB), max(0, flush - 1)) if flush else 0)
            n = rng.choice([1, 100, 4 * KIB, 70 * KIB])
            got = await s.read(start, n)
            if start < flush:
                assert got, "a durable byte was not served"
                assert got == s.store.read(start, len(got))
            else:
                assert got == b""
    if budget.limit >= 40 * KIB:  # room for several writes: the tail must be used
        assert sum(s.statistics().recent_hits for s in stores) > 0
    for s in stores:
        await s.aclose()
    assert budget.used == 0


async def test_a_store_keeps_its_newest_wal_only_while_it_has_readers(
        mock_clock: trio.testing.MockClock) -> None:
    budget = RecentWalBudget()
    s = AsyncWalStore(MemoryWalStore(SEG, Lsn(0)), inline=True, recent_budget=budget)
    await s.write(Lsn(0), b"a" * 100)
    await s.flush()
    assert budget.used == 0  # only written to: nothing kept (R5)
    assert await s.read(Lsn(0), 100) == b"a" * 100  # from the store
    assert s.statistics().recent_hits == 0
    await s.write(Lsn(100), b"b" * 100)
    await s.flush()
    assert budget.used == 100  # a reader came: the next writes are kept
    assert await s.read(Lsn(100), 100) == b"b" * 100
    assert s.statistics().recent_hits == 1
    mock_clock.jump(RECENT_READER_WINDOW + 1)
    await s.write(Lsn(200), b"c" * 100)
    await s.flush()
    assert budget.used == 0  # no reader for the window: given back at the next write
    await s.aclose()
