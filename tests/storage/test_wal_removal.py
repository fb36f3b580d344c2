"""``remove_before`` (WalStore rule 6): whole segments below a horizon go, crash-safely."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from safekeeper_recovery.core import Lsn, StorageError, segment_file_name
from safekeeper_recovery.storage import (
    FLUSH_POSITION_FILE_NAME,
    REMOVAL_HORIZON_FILE_NAME,
    DiskFaults,
    FileWalStore,
    MemoryWalStore,
)
from safekeeper_recovery.storage._removal import record_removal_horizon

SEG = 1 << 20


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name[:1] == "0")


def filled(directory: Path, nsegs: float) -> FileWalStore:
    store = FileWalStore.create(directory, SEG, Lsn(0))
    data = bytes(range(256)) * (SEG // 256)
    for _ in range(int(nsegs)):
        store.write(store.write_lsn, data)
    if nsegs % 1:
        store.write(store.write_lsn, data[: int(SEG * (nsegs % 1))])
    store.flush()
    return store


def test_removal_unlinks_whole_segments_and_the_store_reopens_at_the_new_start(
    tmp_path: Path,
) -> None:
    store = filled(tmp_path, 4.5)
    digest = store.digest(Lsn(3 * SEG), store.flush_lsn)
    assert store.remove_before(Lsn(3 * SEG)) == 3
    assert store.start_lsn == Lsn(3 * SEG)
    assert segments(tmp_path) == [segment_file_name(3, SEG), segment_file_name(4, SEG) + ".partial"]
    with pytest.raises(StorageError, match="not available"):
        store.read(Lsn(2 * SEG), 10)
    flush = store.flush_lsn
    store.close()
    with FileWalStore.open(tmp_path, SEG) as again:
        assert (again.start_lsn, again.flush_lsn) == (Lsn(3 * SEG), flush)
        assert again.digest(Lsn(3 * SEG), flush) == digest
        assert again.remove_before(Lsn(2 * SEG)) == 0, "a lower horizon is a no-op"


def test_removal_refuses_a_horizon_that_is_not_a_segment_start_or_beyond_the_flush(
    tmp_path: Path,
) -> None:
    with filled(tmp_path, 2.5) as store:
        with pytest.raises(StorageError, match="not a segment start"):
            store.remove_before(Lsn(SEG + 1))
        with pytest.raises(StorageError, match="beyond the flush position"):
            store.remove_before(Lsn(3 * SEG))
        assert store.start_lsn == Lsn(0)


def test_a_crash_after_recording_the_horizon_finishes_the_removal_at_open(tmp_path: Path) -> None:
    with filled(tmp_path, 3.5) as store:
        flush = store.flush_lsn
        digest = store.digest(Lsn(2 * SEG), flush)
    # The crash: the horizon is durable, no segment was unlinked yet.
    record_removal_horizon(tmp_path, Lsn(2 * SEG))
    with FileWalStore.open(tmp_path, SEG) as store:
        assert store.start_lsn == Lsn(2 * SEG)
        assert store.digest(Lsn(2 * SEG), flush) == digest
    assert segments(tmp_path) == [segment_file_name(2, SEG), segment_file_name(3, SEG) + ".partial"]


def test_a_failed_unlink_leaves_a_store_that_opens(tmp_path: Path) -> None:
    store = filled(tmp_path, 3.5)
    flush = store.flush_lsn
    with DiskFaults() as faults:
        faults.fail("unlink", errno.EIO, under=tmp_path, after=1)
        with pytest.raises(StorageError, match="cannot remove WAL below"):
            store.remove_before(Lsn(3 * SEG))
    assert store.start_lsn == Lsn(3 * SEG), "the horizon was recorded before unlinking"
    store.close()
    with FileWalStore.open(tmp_path, SEG) as again:
        assert (again.start_lsn, again.flush_lsn) == (Lsn(3 * SEG), flush)
    assert segments(tmp_path) == [segment_file_name(3, SEG) + ".partial"]
    assert {FLUSH_POSITION_FILE_NAME, REMOVAL_HORIZON_FILE_NAME} <= {
        p.name for p in tmp_path.iterdir()}


def test_the_memory_twin_removes_the_same_way() -> None:
    store = MemoryWalStore(SEG, Lsn(0))
    store.write(Lsn(0), b"x" * (2 * SEG + 10))
    store.flush()
    assert store.remove_before(Lsn(2 * SEG)) == 2
    assert store.start_lsn == Lsn(2 * SEG)
    assert store.read(Lsn(2 * SEG), 100) == b"x" * 10
    with pytest.raises(StorageError, match="not available"):
        store.read(Lsn(SEG), 1)
    assert store.crash().start_lsn == Lsn(2 * SEG)
