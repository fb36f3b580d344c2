"""``FileWalStore`` specifics: files on disk, start-up settling, crash-safe truncation."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from safekeeper_recovery.core import CorruptionError, Lsn, StorageError, segment_file_name
from safekeeper_recovery.storage import (
    FLUSH_POSITION_FILE_NAME,
    TRUNCATION_MARK_FILE_NAME,
    FileWalStore,
)
from safekeeper_recovery.storage import _fileops as fileops
from safekeeper_recovery.storage._durable import pwritev_all
from safekeeper_recovery.storage._truncation_mark import write_mark

SEG = 1 << 20


def seg(segno: int, partial: bool = False) -> str:
    return segment_file_name(segno, SEG) + (".partial" if partial else "")


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_create_writes_only_the_flush_position_file(tmp_path: Path) -> None:
    FileWalStore.create(tmp_path / "a" / "b", SEG, Lsn(0)).close()
    assert listing(tmp_path / "a" / "b") == [FLUSH_POSITION_FILE_NAME]
    assert FileWalStore.exists(tmp_path / "a" / "b")


def test_create_refuses_an_existing_store_and_open_refuses_a_missing_one(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no WAL store"):
        FileWalStore.open(tmp_path, SEG)
    FileWalStore.create(tmp_path, SEG, Lsn(0)).close()
    with pytest.raises(StorageError, match="already holds"):
        FileWalStore.create(tmp_path, SEG, Lsn(0))
    with pytest.raises(StorageError, match="segment size"):
        FileWalStore.open(tmp_path, 2 * SEG)


def test_create_clears_leftovers_of_a_create_that_crashed(tmp_path: Path) -> None:
    (tmp_path / seg(0, True)).write_bytes(b"junk")
    (tmp_path / "waltmp").write_bytes(b"junk")
    (tmp_path / "unrelated").write_bytes(b"kept")
    FileWalStore.create(tmp_path, SEG, Lsn(0)).close()
    assert listing(tmp_path) == [FLUSH_POSITION_FILE_NAME, "unrelated"]


def test_segments_are_full_size_and_completed_ones_lose_partial(tmp_path: Path) -> None:
    with FileWalStore.create(tmp_path, SEG, Lsn(SEG - 10)) as s:
        s.write(Lsn(SEG - 10), b"x" * 20)
        assert listing(tmp_path) == [seg(0), seg(1, True), FLUSH_POSITION_FILE_NAME]
        assert (tmp_path / seg(1, True)).stat().st_size == SEG
        assert (tmp_path / seg(0)).stat().st_size == SEG


def test_a_write_filling_a_segment_exactly_completes_it(tmp_path: Path) -> None:
    with FileWalStore.create(tmp_path, SEG, Lsn(0)) as s:
        s.write(Lsn(0), b"y" * SEG)
        assert listing(tmp_path) == [seg(0), FLUSH_POSITION_FILE_NAME]
        s.flush()
    with FileWalStore.open(tmp_path, SEG) as s:
        assert s.flush_lsn == SEG
        assert s.read(Lsn(SEG - 1), 10) == b"y"


def test_fallocate_unsupported_falls_back_to_writing_zeros(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(fileops, "posix_fallocate", unsupported)
    with FileWalStore.create(tmp_path, SEG, Lsn(0)) as s:
        s.write(Lsn(0), b"z")
        s.flush()
        assert (tmp_path / seg(0, True)).stat().st_size == SEG


def test_open_drops_unflushed_segments_and_reopens_the_current_as_partial(
    tmp_path: Path,
) -> None:
    s = FileWalStore.create(tmp_path, SEG, Lsn(0))
    s.write(Lsn(0), b"a" * 100)
    s.flush()
    s.write(Lsn(100), b"b" * (3 * SEG))  # fills and completes segments 0..2, never flushed
    s.close()
    assert listing(tmp_path) == [seg(0), seg(1), seg(2), seg(3, True), FLUSH_POSITION_FILE_NAME]
    with FileWalStore.open(tmp_path, SEG) as s:
        assert (s.write_lsn, s.flush_lsn) == (100, 100)
        assert listing(tmp_path) == [seg(0, True), FLUSH_POSITION_FILE_NAME]
        s.write(Lsn(100), b"c")
        s.flush()
        assert s.read(Lsn(98), 10) == b"aac"


def test_open_redoes_a_lost_rename_of_a_completed_segment(tmp_path: Path) -> None:
    with FileWalStore.create(tmp_path, SEG, Lsn(0)) as s:
        s.write(Lsn(0), b"d" * (SEG + 5))
        s.flush()
    os.rename(tmp_path / seg(0), tmp_path / seg(0, True))  # as if the rename was lost
    with FileWalStore.open(tmp_path, SEG) as s:
        assert s.flush_lsn == SEG + 5
    assert listing(tmp_path) == [seg(0), seg(1, True), FLUSH_POSITION_FILE_NAME]


def test_a_missing_segment_below_the_flush_position_is_corruption(tmp_path: Path) -> None:
    with FileWalStore.create(tmp_path, SEG, Lsn(0)) as s:
        s.write(Lsn(0), b"e" * (SEG + 5))
        s.flush()
    (tmp_path / seg(0)).unlink()
    with pytest.raises(CorruptionError, match="missing"):
        FileWalStore.open(tmp_path, SEG)


def test_a_short_segment_is_corruption(tmp_path: Path) -> None:
    with FileWalStore.create(tmp_path, SEG, Lsn(0)) as s:
        s.write(Lsn(0), b"e" * 5)
        s.flush()
    os.truncate(tmp_path / seg(0, True), 100)
    with pytest.raises(CorruptionError, match="100 bytes"):
        FileWalStore.open(tmp_path, SEG)


def test_a_pending_truncation_mark_is_redone_at_open(tmp_path: Path) -> None:
    with FileWalStore.create(tmp_path, SEG, Lsn(0)) as s:
        s.write(Lsn(0), b"f" * (2 * SEG + 10))
        s.flush()
    write_mark(tmp_path, Lsn(SEG // 2))  # as if truncate() crashed right after the mark
    with FileWalStore.open(tmp_path, SEG) as s:
        assert (s.write_lsn, s.flush_lsn) == (SEG // 2, SEG // 2)
    assert listing(tmp_path) == [seg(0, True), FLUSH_POSITION_FILE_NAME]
    with FileWalStore.open(tmp_path, SEG) as s:
        assert s.flush_lsn == SEG // 2


def test_a_redo_never_truncates_up_past_the_recorded_flush_position(tmp_path: Path) -> None:
    with FileWalStore.create(tmp_path, SEG, Lsn(0)) as s:
        s.write(Lsn(0), b"g" * 100)
        s.flush()
        s.write(Lsn(100), b"h" * 100)  # not durable
    write_mark(tmp_path, Lsn(150))
    with FileWalStore.open(tmp_path, SEG) as s:
        assert s.flush_lsn == 100
    assert TRUNCATION_MARK_FILE_NAME not in listing(tmp_path)


def test_truncate_zeroes_the_tail_and_reverts_a_completed_segment(tmp_path: Path) -> None:
    with FileWalStore.create(tmp_path, SEG, Lsn(0)) as s:
        s.write(Lsn(0), b"i" * (2 * SEG + 1))
        s.flush()
        s.truncate(Lsn(SEG - 4))
        assert listing(tmp_path) == [seg(0, True), FLUSH_POSITION_FILE_NAME]
    image = (tmp_path / seg(0, True)).read_bytes()
    assert len(image) == SEG
    assert image[-8:] == b"iiii\0\0\0\0"


def test_a_failed_truncation_stays_pending_until_one_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = FileWalStore.create(tmp_path, SEG, Lsn(0))
    s.write(Lsn(0), b"j" * 1000)
    s.flush()
    real_ftruncate = fileops.ftruncate

    def failing(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "injected I/O error")

    monkeypatch.setattr(fileops, "ftruncate", failing)
    with pytest.raises(StorageError, match="injected"):
        s.truncate(Lsn(500))
    assert s.truncation_pending
    assert TRUNCATION_MARK_FILE_NAME in listing(tmp_path)
    assert s.flush_lsn == 500  # lowered durably before the failing step
    with pytest.raises(StorageError, match="truncation is pending"):
        s.write(s.write_lsn, b"k")
    monkeypatch.setattr(fileops, "ftruncate", real_ftruncate)
    s.truncate(Lsn(400))
    assert TRUNCATION_MARK_FILE_NAME not in listing(tmp_path)
    s.write(Lsn(400), b"k")
    s.flush()
    s.close()
    with FileWalStore.open(tmp_path, SEG) as s:
        assert s.read(Lsn(398), 10) == b"jjk"


def test_write_chunks_equals_one_joined_write_across_segments(tmp_path: Path) -> None:
    # Chunks of uneven sizes (one empty), one straddling the end of segment 0 and one
    # ending exactly at the end of segment 1: the bytes and files must be those of a
    # single write of the joined chunks.
    rng = random.Random(7)
    sizes = [3, 0, SEG - 20, 40, 5000, SEG - 5000 - 23, 100_000]
    chunks = [rng.randbytes(n) for n in sizes]
    joined = b"".join(chunks)
    with FileWalStore.create(tmp_path, SEG, Lsn(0)) as s:
        s.write_chunks(Lsn(0), chunks)
        assert s.write_lsn == Lsn(len(joined))
        assert listing(tmp_path) == [seg(0), seg(1), seg(2, True), FLUSH_POSITION_FILE_NAME]
        s.flush()
        got = b"".join(s.read(Lsn(p), SEG) for p in range(0, len(joined), SEG))
    assert got == joined
    with pytest.raises(StorageError, match="rewrite"), FileWalStore.open(tmp_path, SEG) as s:
        s.write_chunks(Lsn(0), [b"x"])


def test_pwritev_all_resumes_after_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel may write less than asked (signals, quotas): every byte must still land,
    # in order, also when a short write ends in the middle of a buffer.
    real = os.pwritev
    calls: list[int] = []

    def short_pwritev(fd: int, buffers: list[memoryview], offset: int) -> int:
        calls.append(len(buffers))
        return real(fd, [bytes(b"".join(buffers)[:7])], offset)

    monkeypatch.setattr(fileops, "pwritev", short_pwritev)
    parts = [b"abcde", b"", b"fghijklmnop", b"q", b"rstuvwxyz0123", b""]
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        pwritev_all(fd, [memoryview(p) for p in parts], 3)
        assert os.pread(fd, 100, 0) == b"\0\0\0" + b"".join(parts)
    finally:
        os.close(fd)
    assert len(calls) == 5  # 30 bytes, 7 per call
