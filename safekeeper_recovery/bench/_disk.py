"""The disk limit: WAL-sized segment files written and fsynced by a plain Python loop."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

__all__ = ["SEGMENT_SIZE", "write_segments"]

SEGMENT_SIZE = 16 * 1024 * 1024


def write_segments(directory: Path, nbytes: int, segment_size: int = SEGMENT_SIZE) -> float:
    """Write ``nbytes`` as files of ``segment_size`` under ``directory`` (created, then
    removed), one ``write`` and one ``fsync`` per segment, plus a directory fsync at the
    end. Returns the wall time of the writes in seconds (removal not included). Blocking:
    call it from a thread."""
    directory.mkdir(parents=True, exist_ok=True)
    # Random bytes: nothing on the way (filesystem, device) may shortcut zeros.
    block = os.urandom(segment_size)
    try:
        t0 = time.perf_counter()
        remaining, index = nbytes, 0
        while remaining > 0:
            n = min(remaining, segment_size)
            fd = os.open(directory / f"{index:024X}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                view = memoryview(block)[:n]
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            remaining -= n
            index += 1
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(directory, ignore_errors=True)
