"""Crash-safe file primitives: fsync a directory, replace a file atomically and durably.

Every file call goes through ``_fileops`` (the disk-fault seam). Every helper raises
``OSError`` unchanged; the stores above translate it into
``StorageError`` with the context of what they were doing.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from . import _fileops as fileops

__all__ = [
    "check_room",
    "discard_quietly",
    "fsync_directory",
    "pwrite_all",
    "pwritev_all",
    "remove_durably",
    "replace_file_durably",
]

_IOV_MAX = 1024  # POSIX minimum is 16; Linux allows 1024 buffers per call


def fsync_directory(directory: Path) -> None:
    """fsync ``directory`` so that creations, renames and removals in it survive a power loss."""
    fd = fileops.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fileops.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset``: ``os.pwrite`` may write less than asked."""
    view = memoryview(data)
    while view:
        written = fileops.pwrite(fd, view, offset)
        if written <= 0:  # pragma: no cover - the kernel reports errors as OSError
            raise OSError(f"pwrite wrote {written} bytes at offset {offset}")
        view = view[written:]
        offset += written


def pwritev_all(fd: int, buffers: list[memoryview], offset: int) -> None:
    """Write all of ``buffers``, back to back, from ``offset`` with ``os.pwritev``.

    One system call (and one release of the GIL) for many buffers, instead of joining them
    first; short writes are resumed. ``buffers`` is consumed (the list is modified).
    """
    buffers[:] = [b for b in buffers if len(b)]  # a trailing empty one would look like EOF
    while buffers:
        batch = buffers[:_IOV_MAX]
        written = fileops.pwritev(fd, batch, offset)
        if written <= 0:  # pragma: no cover - the kernel reports errors as OSError
            raise OSError(f"pwritev wrote {written} bytes at offset {offset}")
        offset += written
        while written:
            if written >= len(buffers[0]):
                written -= len(buffers.pop(0))
            else:
                buffers[0] = buffers[0][written:]
                written = 0


def replace_file_durably(path: Path, data: bytes) -> None:
    """Make ``path`` hold exactly ``data``, atomically with respect to crashes.

    Writes ``<path>.partial``, fsyncs it, renames it over ``path`` and fsyncs the directory:
    after a crash ``path`` holds either the old or the new content, never a mix.
    """
    tmp = path.with_name(path.name + ".partial")
    fd = fileops.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            pwrite_all(fd, data, 0)
            fileops.fsync(fd)
        finally:
            os.close(fd)
        fileops.replace(tmp, path)
    except BaseException:
        discard_quietly(tmp)  # a half-written temporary file must not hold disk space
        raise
    fsync_directory(path.parent)


def discard_quietly(path: Path) -> None:
    """Remove a temporary file after a failure, best effort: the failure being handled is
    what the caller reports, and a leftover is removed by the next attempt anyway."""
    with contextlib.suppress(OSError):
        fileops.unlink(path)


def remove_durably(path: Path) -> None:
    """Remove ``path`` (if present) and fsync its directory so the removal is durable."""
    try:
        fileops.unlink(path)
    except FileNotFoundError:
        return
    fsync_directory(path.parent)


ROOM_PROBE_FILE_NAME = "room.probe"


def check_room(directory: Path, nbytes: int) -> None:
    """Raise ``OSError`` unless ``nbytes`` can be allocated in ``directory`` right now.

    Really allocates (``<directory>/room.probe``, removed again): free-space figures do not
    show a user's quota, and this also needs a free file descriptor. Goes through the
    disk-fault seam like every store call.
    """
    probe = directory / ROOM_PROBE_FILE_NAME
    fd = fileops.open(probe, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        fileops.posix_fallocate(fd, 0, nbytes)
    finally:
        os.close(fd)
        discard_quietly(probe)
