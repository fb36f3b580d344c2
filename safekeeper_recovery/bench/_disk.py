"""The disk limit: WAL segments written the way a node writes them, as fast as possible.

Rules:

1. Same I/O mode as the node's WAL store (``storage/_segments.py``, ``storage/_direct.py``):
   each 16 MiB segment is created full-size with ``posix_fallocate``, written through an
   ``O_DIRECT`` descriptor in page-aligned ``WRITE_BYTES`` pieces (the size of one
   ``AsyncWalStore`` batch, the node's largest write) and ``fdatasync``'d once when it is
   full, then the directory is fsynced. A buffered loop is no limit: on a VM whose guest
   memory is populated lazily it measures page-cache faults, not the disk (an earlier
   version of this anchor read 332-571 MB/s where ``dd oflag=direct`` wrote 1.7-1.9 GB/s).
2. Where the file system refuses ``O_DIRECT`` (tmpfs), the node falls back to buffered
   writes, and so does this loop; :attr:`DiskRun.mode` says which mode was measured, and
   the report prints it next to the figure.
3. The bytes are random (nothing on the way may shortcut zeros), made before the clock
   starts; the files are removed afterwards (removal not timed).
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import time
from pathlib import Path

import attrs

__all__ = ["SEGMENT_SIZE", "WRITE_BYTES", "DiskRun", "write_segments"]

SEGMENT_SIZE = 16 * 1024 * 1024
WRITE_BYTES = 4 * 1024 * 1024
"""One write: the node's ``AsyncWalStore`` batch (``DEFAULT_WRITE_BATCH``)."""


@attrs.frozen
class DiskRun:
    seconds: float
    """Wall time of the writes and syncs (removal not included)."""
    mode: str
    """How the bytes were written, for the report (rule 2)."""


def _open(path: Path, size: int, direct: bool) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            os.close(fd)
            raise
    return fd


def _pwrite_all(fd: int, buf: memoryview, n: int, offset: int) -> None:
    done = 0
    while done < n:
        # The slice is released on return: the mapping under it is closed later.
        done += os.pwrite(fd, buf[done:n], offset + done)


def write_segments(directory: Path, nbytes: int, segment_size: int = SEGMENT_SIZE,
                   write_bytes: int = WRITE_BYTES) -> DiskRun:
    """Write ``nbytes`` as segment files under ``directory`` (created, then removed) the way
    the node does (module rules); ``segment_size`` and ``write_bytes`` must be multiples of
    the page size. Blocking: call it from a thread. Raises ``OSError`` on I/O errors."""
    if segment_size % mmap.PAGESIZE or write_bytes % mmap.PAGESIZE:
        raise ValueError("segment_size and write_bytes must be multiples of the page size")
    directory.mkdir(parents=True, exist_ok=True)
    write_bytes = min(write_bytes, segment_size)
    # An anonymous mapping is page-aligned, as O_DIRECT wants the buffer's address.
    block = mmap.mmap(-1, write_bytes)
    block.write(os.urandom(write_bytes))
    direct = hasattr(os, "O_DIRECT")
    refused = ""
    try:
        with memoryview(block) as buf:
            t0 = time.perf_counter()
            remaining, index = nbytes, 0
            while remaining > 0:
                n = min(remaining, segment_size)
                path = directory / f"{index:024X}"
                try:
                    fd = _open(path, segment_size, direct)
                except OSError as e:
                    if not direct or e.errno != errno.EINVAL:
                        raise
                    direct, refused = False, f" (O_DIRECT refused: {e.strerror})"
                    fd = _open(path, segment_size, direct)
                try:
                    offset = 0
                    while offset < n:
                        # Whole pages only (rule 1): the last piece is rounded up.
                        k = min(write_bytes, -(-(n - offset) // mmap.PAGESIZE) * mmap.PAGESIZE)
                        _pwrite_all(fd, buf, k, offset)
                        offset += k
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
                remaining -= n
                index += 1
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            seconds = time.perf_counter() - t0
    finally:
        block.close()
        shutil.rmtree(directory, ignore_errors=True)
    piece = f"{write_bytes >> 20} MiB" if write_bytes >= 1 << 20 else f"{write_bytes >> 10} KiB"
    how = "O_DIRECT" if direct else "buffered" + refused
    return DiskRun(seconds, f"{how}, {piece} writes into posix_fallocate'd "
                            f"{segment_size >> 20} MiB segments, fdatasync per segment")
