"""``FileWalStore(direct_io=True)``: O_DIRECT writes, the block head, and the fallbacks.

The contract itself (bytes, flushes, truncations, reopen) runs for the ``direct`` kind in
``test_wal_store.py``; here: that O_DIRECT is really used, that appends ending mid-block
keep the bytes before them, and that a file system refusing O_DIRECT costs nothing but the
speed.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import random
from pathlib import Path
from typing import Any

import pytest

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.storage import FileWalStore, _segments
from safekeeper_recovery.storage import _fileops as fileops
from safekeeper_recovery.storage._direct import (
    BLOCK,
    STAGE_BYTES,
    RefusedDevices,
    read_direct,
    write_direct,
)

SEG = 1 << 20

pytestmark = pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT here")


def _write_fd_flags(store: FileWalStore) -> int:
    fd = store._fd  # the open segment's descriptor
    assert fd is not None
    return fcntl.fcntl(fd, fcntl.F_GETFL)


def test_direct_store_writes_through_an_o_direct_descriptor(tmp_path: Path) -> None:
    with FileWalStore.create(tmp_path, SEG, Lsn(100), direct_io=True) as s:
        s.write(Lsn(100), b"abc")
        assert _write_fd_flags(s) & os.O_DIRECT
    with FileWalStore.create(tmp_path / "b", SEG, Lsn(100)) as s:
        s.write(Lsn(100), b"abc")
        assert not _write_fd_flags(s) & os.O_DIRECT


def test_unaligned_appends_keep_every_earlier_byte(tmp_path: Path) -> None:
    # Many appends that start and end mid-block, some across blocks, some across the
    # segment end, with flushes and a reopen between them: each rewrites its head block.
    rng = random.Random(3)
    start = Lsn(SEG - 5 * BLOCK - 77)
    model = bytearray()
    s = FileWalStore.create(tmp_path, SEG, start, direct_io=True)
    try:
        for i in range(60):
            data = rng.randbytes(rng.choice([1, 13, BLOCK - 1, BLOCK + 1, 70_000]))
            s.write(start + len(model), data)
            model += data
            if i % 7 == 0:
                s.flush()
            if i == 30:
                s.flush()
                s.close()
                s = FileWalStore.open(tmp_path, SEG, direct_io=True)
        s.flush()
        got = bytearray()
        while len(got) < len(model):
            got += s.read(start + len(got), SEG)
        assert got == model
    finally:
        s.close()
    # What a buffered reader of the files sees (the WAL sender, verify --data-dir).
    with FileWalStore.open(tmp_path, SEG) as s:
        assert s.read(start, 64) == model[:64]


def test_write_direct_returns_the_head_of_the_next_write(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT | os.O_DIRECT)
    try:
        os.posix_fallocate(fd, 0, 2 * STAGE_BYTES)
        first = os.urandom(STAGE_BYTES + 10)  # more than one staging buffer
        head = write_direct(fd, 0, b"", [memoryview(first)])
        assert head == first[-10:]
        second = os.urandom(BLOCK - 10)  # ends exactly on a block boundary
        assert write_direct(fd, len(first), head, [memoryview(second)]) == b""
        with pytest.raises(ValueError, match="head"):
            write_direct(fd, 5, b"", [memoryview(b"x")])
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes()[: len(first) + len(second)] == first + second


def _refuse_o_direct(monkeypatch: pytest.MonkeyPatch, where: str) -> list[str]:
    """Make O_DIRECT opens (``where="open"``) or O_DIRECT writes (``"write"``) fail with
    EINVAL, as tmpfs and some network file systems do. The process-wide memo of refusing
    file systems starts empty and is dropped afterwards (the test's device is not tmpfs)."""
    monkeypatch.setattr(_segments, "refused_devices", RefusedDevices())
    refused: list[str] = []
    real_open, real_pwrite = fileops.open, fileops.pwrite

    def open_(path: Any, flags: int, *args: Any) -> int:
        if where == "open" and flags & os.O_DIRECT:
            refused.append("open")
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    def pwrite(fd: int, data: Any, offset: int) -> int:
        if where == "write" and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append("write")
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(fileops, "open", open_)
    monkeypatch.setattr(fileops, "pwrite", pwrite)
    return refused


@pytest.mark.parametrize("where", ["open", "write"])
def test_a_file_system_refusing_o_direct_gets_buffered_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    with FileWalStore.create(tmp_path, SEG, Lsn(0), direct_io=True) as s:
        if where == "write":
            # Opened with O_DIRECT and written, not yet synced, when writes start failing.
            s.write(Lsn(0), b"first")
            s.flush()
            s.write(Lsn(5), b"second")
            assert _write_fd_flags(s) & os.O_DIRECT
        refused = _refuse_o_direct(monkeypatch, where)
        with caplog.at_level(logging.WARNING, logger="safekeeper_recovery.storage"):
            if where == "open":
                s.write(Lsn(0), b"first")
                s.write(Lsn(5), b"second")
            s.write(Lsn(11), b"third" * 1000)
            s.write(Lsn(5011), b"fourth")
            assert s.flush() == Lsn(5017)
        assert refused == [where]  # tried once, then never again
        assert not _write_fd_flags(s) & os.O_DIRECT
        assert s.read(Lsn(0), 5017) == b"firstsecond" + b"third" * 1000 + b"fourth"
    assert "direct I/O refused" in caplog.text


def test_a_refusing_file_system_is_tried_and_reported_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    # Thousands of timelines on tmpfs: one warning, and no more O_DIRECT attempts.
    refused = _refuse_o_direct(monkeypatch, "open")
    with caplog.at_level(logging.WARNING, logger="safekeeper_recovery.storage"):
        for i in range(3):
            with FileWalStore.create(tmp_path / str(i), SEG, Lsn(0), direct_io=True) as s:
                s.write(Lsn(0), b"wal")
                assert s.flush() == Lsn(3)
                assert not _write_fd_flags(s) & os.O_DIRECT
    assert refused == ["open"]
    assert caplog.text.count("direct I/O refused") == 1


def test_read_direct_returns_the_asked_bytes_at_any_offset(tmp_path: Path) -> None:
    data = random.Random(5).randbytes(2 * STAGE_BYTES + 100)  # ends mid-block
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY | os.O_DIRECT)
    try:
        for offset in (0, 1, BLOCK - 1, BLOCK, 12_345, STAGE_BYTES - 5, len(data) - 10):
            for n in (1, BLOCK - 1, BLOCK, BLOCK + 1, 100_000, STAGE_BYTES):
                got = read_direct(fd, offset, n)
                want = data[offset:offset + n]
                # All of it, except that an unaligned start may cut a full buffer's worth
                # short by at most a block (and the file's end cuts everything).
                assert want.startswith(got), (offset, n)
                assert len(got) >= min(len(want), STAGE_BYTES - BLOCK), (offset, n, len(got))
        assert read_direct(fd, len(data), 10) == b""
    finally:
        os.close(fd)


def test_direct_store_reads_through_o_direct_not_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    start = Lsn(SEG - 3 * BLOCK - 5)
    data = random.Random(8).randbytes(2 * SEG + 777)  # closed segments and an open one
    reads: list[tuple[str, bool]] = []  # (call, descriptor opened O_DIRECT)
    real_pread, real_preadv = fileops.pread, fileops.preadv

    def pread(fd: int, n: int, offset: int) -> bytes:
        reads.append(("pread", bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)))
        return real_pread(fd, n, offset)

    def preadv(fd: int, buffers: Any, offset: int) -> int:
        reads.append(("preadv", bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)))
        return real_preadv(fd, buffers, offset)

    with FileWalStore.create(tmp_path, SEG, start, direct_io=True) as s:
        s.write(start, data)
        s.flush()
        monkeypatch.setattr(fileops, "pread", pread)
        monkeypatch.setattr(fileops, "preadv", preadv)
        got = bytearray()
        while len(got) < len(data):
            chunk = s.read(start + len(got), STAGE_BYTES)
            assert chunk
            got += chunk
        assert s.read(start + 5, 10) == data[5:15]
        assert s.read(start + len(data) - 3, 3) == data[-3:]  # the open segment's end
    assert got == data
    assert reads
    assert set(reads) == {("preadv", True)}


def test_a_file_system_refusing_direct_reads_gets_buffered_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(_segments, "refused_devices", RefusedDevices())
    data = random.Random(9).randbytes(SEG + 1000)
    with FileWalStore.create(tmp_path, SEG, Lsn(0), direct_io=True) as s:
        s.write(Lsn(0), data)
        s.flush()

        def preadv(fd: int, buffers: Any, offset: int) -> int:
            raise OSError(errno.EINVAL, "Invalid argument")

        monkeypatch.setattr(fileops, "preadv", preadv)
        with caplog.at_level(logging.WARNING, logger="safekeeper_recovery.storage"):
            assert s.read(Lsn(10), 100) == data[10:110]  # closed segment
            assert s.read(Lsn(SEG + 10), 100) == data[SEG + 10:SEG + 110]  # open one
    assert caplog.text.count("direct I/O refused") == 1
