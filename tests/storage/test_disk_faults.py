"""Disk faults (ENOSPC, EIO) injected into the file stores' write, sync and rename calls.

Each failure must surface as a ``StorageError`` that names the cause, and the directory
must reopen with everything flushed before the fault intact and nothing past the recorded
flush position visible; the reopened store takes writes again.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from safekeeper_recovery.core import Lsn, StorageError
from safekeeper_recovery.storage import (
    FLUSH_POSITION_FILE_NAME,
    DiskFaults,
    FileControlFileStore,
    FileWalStore,
)
from safekeeper_recovery.storage import _fileops as fileops

SEG = 1 << 20
START = Lsn(0x100)
BEFORE = 300 * 1024
"""Bytes flushed before the fault."""
DURING = SEG
"""Bytes written while the fault is active: they cross a segment end, so a segment is
completed (fdatasync, rename) and a new one created (open, fallocate, fsync, rename)."""


def wal(n: int, seed: int = 0) -> bytes:
    return bytes((seed + i * 7) % 253 for i in range(n))


DATA = wal(BEFORE + DURING + 4096)
ERRNOS = [pytest.param(errno.ENOSPC, id="ENOSPC"), pytest.param(errno.EIO, id="EIO")]
MESSAGES = {errno.ENOSPC: "No space left on device", errno.EIO: "Input/output error"}


def read_all(store: FileWalStore, start: Lsn, end: Lsn) -> bytes:
    parts, pos = [], start
    while pos < end:
        chunk = store.read(pos, int(end) - int(pos))
        assert chunk, f"no durable WAL at {pos}"
        parts.append(chunk)
        pos += len(chunk)
    return b"".join(parts)


def write_then_flush(store: FileWalStore, data: bytes) -> None:
    for off in range(0, len(data), 128 * 1024):
        store.write(store.write_lsn, data[off : off + 128 * 1024])
    store.flush()


def assert_reopens_intact(directory: Path, at_least: Lsn) -> Lsn:
    """Reopen without faults: flushed WAL is there, every visible byte is the written one,
    and the store takes (and flushes) writes again. Returns the reopened flush position."""
    with FileWalStore.open(directory, SEG) as store:
        flushed = store.flush_lsn
        assert at_least <= flushed <= START + len(DATA)
        assert store.write_lsn == flushed
        assert read_all(store, START, flushed) == DATA[: int(flushed) - int(START)]
        rest = DATA[int(flushed) - int(START) :][:4096]
        store.write(flushed, rest)
        assert store.flush() == flushed + len(rest)
    with FileWalStore.open(directory, SEG) as store:
        end = flushed + len(rest)
        assert store.flush_lsn == end
        assert read_all(store, START, end) == DATA[: int(end) - int(START)]
    return flushed


# ---- the injector itself -------------------------------------------------------------------


def test_the_nth_matching_call_fails_and_uninstalling_restores_the_os_functions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f"
    with DiskFaults() as faults:
        faults.fail("fsync", errno.EIO, after=2, times=1)
        fd = fileops.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fileops.fsync(fd)
            fileops.fsync(fd)
            with pytest.raises(OSError, match="injected fsync fault") as info:
                fileops.fsync(fd)
            assert info.value.errno == errno.EIO
            fileops.fsync(fd)  # times=1: the 4th call succeeds again
        finally:
            os.close(fd)
        assert faults.calls["fsync"] == 4
        assert faults.raised("fsync") == 1
    assert fileops.fsync is os.fsync
    assert fileops.pwrite is os.pwrite
    assert fileops.replace is os.replace


def test_under_limits_a_rule_to_one_directory_also_for_descriptor_calls(tmp_path: Path) -> None:
    hit, spared = tmp_path / "hit", tmp_path / "spared"
    hit.mkdir()
    spared.mkdir()
    with DiskFaults() as faults:
        faults.fail("write", errno.ENOSPC, times=None, under=hit)
        for directory, fails in ((spared, False), (hit, True)):
            fd = fileops.open(directory / "f", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fails:
                    with pytest.raises(OSError, match="No space left"):
                        fileops.pwrite(fd, b"x", 0)
                else:
                    assert fileops.pwrite(fd, b"x", 0) == 1
            finally:
                os.close(fd)


def test_a_torn_write_really_writes_half_before_failing(tmp_path: Path) -> None:
    path = tmp_path / "f"
    with DiskFaults() as faults:
        faults.fail("write", errno.ENOSPC, torn=True)
        fd = fileops.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            with pytest.raises(OSError, match="No space left"):
                fileops.pwrite(fd, b"abcdefgh", 0)
        finally:
            os.close(fd)
    assert path.read_bytes() == b"abcd"


def test_bad_rules_are_refused() -> None:
    faults = DiskFaults()
    with pytest.raises(ValueError, match="unknown operation"):
        faults.fail("chmod")
    with pytest.raises(ValueError, match="times"):
        faults.fail("write", times=0)
    with pytest.raises(ValueError, match="torn"):
        faults.fail("fsync", torn=True)
    with faults, pytest.raises(RuntimeError, match="installed"), DiskFaults():
        pass


# ---- the WAL store -------------------------------------------------------------------------


@pytest.mark.parametrize("error", ERRNOS)
@pytest.mark.parametrize("op", ["write", "fdatasync", "fsync", "rename", "fallocate", "open"])
def test_a_fault_while_writing_wal_is_a_clear_error_and_the_store_reopens_intact(
    tmp_path: Path, op: str, error: int
) -> None:
    store = FileWalStore.create(tmp_path, SEG, START)
    write_then_flush(store, DATA[:BEFORE])
    flushed_before = store.flush_lsn
    with DiskFaults() as faults:
        faults.fail(op, error, times=None, under=tmp_path)
        with pytest.raises(StorageError) as info:
            write_then_flush(store, DATA[BEFORE : BEFORE + DURING])
        assert faults.raised(op) >= 1
        assert MESSAGES[error] in str(info.value)
        assert store.flush_lsn == flushed_before, "a failed flush must not move flush_lsn"
        store.close()
    # Every failure path gives back the space of a half-made segment (issue 20).
    assert not (tmp_path / "waltmp").exists()
    assert_reopens_intact(tmp_path, flushed_before)


@pytest.mark.parametrize("error", ERRNOS)
def test_a_failed_wal_fdatasync_in_flush_records_nothing(tmp_path: Path, error: int) -> None:
    store = FileWalStore.create(tmp_path, SEG, START)
    write_then_flush(store, DATA[:BEFORE])
    store.write(store.write_lsn, DATA[BEFORE : BEFORE + 1000])  # inside the open segment
    with DiskFaults() as faults:
        faults.fail("fdatasync", error, under=tmp_path)
        with pytest.raises(StorageError, match=f"cannot fdatasync WAL.*{MESSAGES[error]}"):
            store.flush()
        assert store.flush_lsn == START + BEFORE
        store.close()
    assert assert_reopens_intact(tmp_path, START + BEFORE) == START + BEFORE


@pytest.mark.parametrize("error", ERRNOS)
@pytest.mark.parametrize("op", ["write", "fdatasync"])
def test_a_failed_flush_position_record_never_makes_unflushed_wal_look_flushed(
    tmp_path: Path, op: str, error: int
) -> None:
    """The slot write is torn (or its sync fails): the older slot still says where durable
    WAL ends, so the reopened store shows no byte that was not fdatasynced."""
    store = FileWalStore.create(tmp_path, SEG, START)
    write_then_flush(store, DATA[:BEFORE])
    flushed_before = store.flush_lsn
    with DiskFaults() as faults:
        faults.fail(op, error, under=tmp_path / FLUSH_POSITION_FILE_NAME, torn=op == "write")
        with pytest.raises(StorageError, match="cannot record flush position"):
            write_then_flush(store, DATA[BEFORE : BEFORE + 1000])
        store.close()
    reopened = assert_reopens_intact(tmp_path, flushed_before)
    if op == "write":
        assert reopened == flushed_before  # the torn slot fails its CRC


@pytest.mark.parametrize("error", ERRNOS)
@pytest.mark.parametrize("op", ["write", "fsync", "rename", "truncate", "unlink"])
def test_a_fault_during_truncation_is_redone_on_reopen(
    tmp_path: Path, op: str, error: int
) -> None:
    store = FileWalStore.create(tmp_path, SEG, START)
    write_then_flush(store, DATA[: BEFORE + DURING])
    target = START + BEFORE // 2
    with DiskFaults() as faults:
        faults.fail(op, error, times=None, under=tmp_path)
        with pytest.raises(StorageError, match="cannot truncate WAL"):
            store.truncate(target)
        store.close()
    with FileWalStore.open(tmp_path, SEG) as store:
        # Either the mark was written (the redo finished the truncation) or the fault hit
        # the mark itself (nothing was touched): never anything in between.
        assert store.flush_lsn in (target, START + BEFORE + DURING)
        assert read_all(store, START, store.flush_lsn) == DATA[: int(store.flush_lsn) - int(START)]
        store.truncate(target)
        store.write(target, b"new")
        store.flush()
    with FileWalStore.open(tmp_path, SEG) as store:
        assert store.flush_lsn == target + 3
        assert read_all(store, START, target + 3) == DATA[: BEFORE // 2] + b"new"


# ---- the control file ----------------------------------------------------------------------


@pytest.mark.parametrize("error", ERRNOS)
@pytest.mark.parametrize("op", ["open", "write", "fsync", "rename"])
def test_a_failed_control_file_persist_keeps_the_previous_body(
    tmp_path: Path, op: str, error: int
) -> None:
    control = FileControlFileStore(tmp_path)
    control.persist(b"term 1")
    with DiskFaults() as faults:
        faults.fail(op, error, times=None, under=tmp_path)
        with pytest.raises(StorageError, match=f"cannot persist control file.*{MESSAGES[error]}"):
            control.persist(b"term 2")
    assert not (tmp_path / "safekeeper.control.partial").exists(), "it would hold disk space"
    reopened = FileControlFileStore(tmp_path)
    # A failed directory fsync comes after the rename: the new body may be visible, but
    # only ever one of the two whole bodies.
    assert reopened.load() in ((b"term 1", b"term 2") if op == "fsync" else (b"term 1",))
    reopened.persist(b"term 3")
    assert FileControlFileStore(tmp_path).load() == b"term 3"
