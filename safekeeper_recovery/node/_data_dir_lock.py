"""The data directory's lock: one node process per data directory.

Two nodes writing one directory would each believe their own view of every timeline (terms,
flush positions, segments) and silently corrupt it. A node therefore holds an exclusive
``flock`` on ``<data_dir>/safekeeper.lock`` for as long as it runs, and writes its pid
into the file (like PostgreSQL's ``postmaster.pid``) so that a refused second node can say
who holds it.

Why ``flock`` and not the pid in the file: the kernel drops the lock when its holder dies,
however it dies, so a node that was SIGKILLed or lost power leaves a stale file that no
longer locks anything, and a restart is never blocked by it (no pid guessing, no stale-pid
clean-up). The file is never deleted: unlinking a lock file while someone may have it open
lets two processes lock two different files. On a clean exit it is emptied instead.

Readers that never write (``verify --data-dir``) take no lock and work next to a running
node.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Final, final

from ..core import SafekeeperError

__all__ = ["LOCK_FILE_NAME", "DataDirLock", "DataDirLocked"]

LOCK_FILE_NAME: Final = "safekeeper.lock"


class DataDirLocked(SafekeeperError):
    """Another process holds the data directory's lock (``pid`` ``None``: it has not
    written its pid yet, or the file could not be read)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"data dir {path.parent} is in use by {holder} (lock file {path}): "
            "is another node running on it? Stop it, or give another --data-dir"
        )
        self.path = path
        self.pid = pid


@final
class DataDirLock:
    """An exclusive lock on a data directory, held until :meth:`release` (or the
    process's death). Use :meth:`acquire`; also a context manager."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Lock ``data_dir`` (which must exist) without waiting and write our pid.

        Raises :class:`DataDirLocked` if another process holds it (the file is left as it
        is), ``SafekeeperError`` if the lock file cannot be opened or locked.
        """
        path = data_dir / LOCK_FILE_NAME
        try:
            # No O_TRUNC: the holder's pid must survive a refused attempt.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise SafekeeperError(f"cannot open lock file {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            pid = _read_pid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataDirLocked(path, pid) from None
            raise SafekeeperError(f"cannot lock {path}: {e.strerror or e}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            os.close(fd)
            raise SafekeeperError(f"cannot write lock file {path}: {e.strerror or e}") from None
        return cls(path, fd)

    def release(self) -> None:
        """Empty the file (no pid: nobody runs here) and drop the lock. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass  # the pid stays; harmless: the lock, not the file's content, counts
        finally:
            os.close(fd)

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
