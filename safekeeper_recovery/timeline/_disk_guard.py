"""The node's disk guard: refuse new WAL before the disk is full (rules U1-U4 in
``core/_disk_guard.py``).

One :class:`DiskGuard` per node watches the file system of the data directory:

1. :meth:`DiskGuard.serve` measures usage every ``interval`` seconds (``statvfs`` in a
   worker thread) and switches between *taking* and *refusing* by U2/U3, logging each
   switch once (a warning when it starts refusing, info when it takes WAL again).
2. Every timeline asks :meth:`DiskGuard.admit` before it writes an append carrying WAL;
   it raises ``DiskUsageExceeded`` while refusing. Between two measurements it counts the
   bytes it admitted and measures again as soon as they could have passed the limit (U4),
   so a fast writer cannot run far past it in one interval.
3. Peer recovery asks :attr:`DiskGuard.paused` before an attempt and waits on
   :meth:`DiskGuard.wait_resumed`; the status (``to_json``) and the metrics say why.

A guard whose measurement fails (the file system does not answer) keeps its last
decision and logs the error once: it never refuses WAL because it cannot measure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import trio

from ..core import DiskLimit, DiskUsageExceeded, guard_refuses
from ..storage import DiskUsage, measure_disk_usage

__all__ = ["DiskGuard", "DiskGuardObserver", "format_bytes"]

log = logging.getLogger(__name__)


class DiskGuardObserver(Protocol):
    """Node-wide metrics of the guard."""

    def disk_measured(self, usage: DiskUsage, limit_bytes: int | None, refusing: bool) -> None: ...

    def appends_refused(self) -> None: ...


def format_bytes(n: int) -> str:
    """``1.5GiB``-style sizes for messages (binary units, one decimal)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


class DiskGuard:
    """See the module docstring. ``limit`` ``None`` (``--max-disk-usage off``) only
    measures, for the status and metrics: it never refuses."""

    def __init__(
        self,
        path: Path,
        limit: DiskLimit | None,
        *,
        interval: float = 1.0,
        measure: Callable[[Path], DiskUsage] = measure_disk_usage,
        observer: DiskGuardObserver | None = None,
    ) -> None:
        self.path = path
        self.limit = limit
        self.interval = interval
        self._measure = measure
        self._observer = observer
        self.usage: DiskUsage | None = None
        """The last measurement (``None`` before the first)."""
        self.refusing: str | None = None
        """Why appends are refused now (the close reason proposers get), else ``None``."""
        self.refusing_since: float | None = None
        """Wall-clock (Unix) time the guard started refusing."""
        self.refused_appends = 0
        self._admitted_since_measure = 0
        self._resumed = trio.Event()
        self._resumed.set()
        self._last_error: str | None = None

    # ---- the decision -------------------------------------------------------------------

    @property
    def limit_bytes(self) -> int | None:
        if self.limit is None or self.usage is None:
            return None
        return self.limit.limit_bytes(self.usage.size)

    @property
    def paused(self) -> str | None:
        """Why WAL is refused now (recovery pauses while this is not ``None``)."""
        return self.refusing

    async def wait_resumed(self) -> None:
        """Return once the guard takes WAL (at once if it does)."""
        await self._resumed.wait()

    async def admit(self, nbytes: int) -> None:
        """Before writing an append of ``nbytes`` of WAL: raise ``DiskUsageExceeded`` if
        the disk is past the limit (U2), measuring again first if the bytes admitted since
        the last measurement could have passed it (U4)."""
        if self.limit is None:
            return
        allowed = self.limit_bytes
        if (self.refusing is None and allowed is not None and self.usage is not None
                and self.usage.used + self._admitted_since_measure + nbytes <= allowed):
            self._admitted_since_measure += nbytes
            return
        if self.refusing is None:
            await self.refresh()
        if self.refusing is not None:
            self.refused_appends += 1
            if self._observer is not None:
                self._observer.appends_refused()
            raise DiskUsageExceeded(f"WAL refused: {self.refusing} (U2)")
        self._admitted_since_measure += nbytes

    # ---- measuring ----------------------------------------------------------------------

    async def refresh(self) -> None:
        """Measure now and apply U2/U3. A failed measurement is logged (once per distinct
        message) and changes nothing."""
        try:
            usage = await trio.to_thread.run_sync(self._measure, self.path)
        except OSError as e:
            message = f"cannot measure the disk usage of {self.path}: {e.strerror or e}"
            if message != self._last_error:
                log.warning("%s (the disk guard keeps its last decision)", message)
                self._last_error = message
            return
        self._last_error = None
        self.apply(usage)

    def apply(self, usage: DiskUsage) -> None:
        """Take ``usage`` as the current measurement and decide (U2/U3)."""
        self.usage = usage
        self._admitted_since_measure = 0
        limit = self.limit
        refuse = limit is not None and guard_refuses(usage.used, usage.size, limit,
                                                     self.refusing is not None)
        if refuse and self.refusing is None:
            assert limit is not None
            self.refusing = (f"disk usage {format_bytes(usage.used)} ({usage.percent:.1f}%) "
                             f"is past --max-disk-usage {_limit_text(limit, usage.size)}")
            self.refusing_since = time.time()
            self._resumed = trio.Event()
            log.warning("%s: refusing new WAL on %s until space is freed (WAL removal, or "
                        "an operator) (rule U2)", self.refusing, self.path)
        elif not refuse and self.refusing is not None:
            log.info("disk usage %s (%.1f%%) is back under --max-disk-usage: taking WAL "
                     "again after %.0fs", format_bytes(usage.used), usage.percent,
                     time.time() - (self.refusing_since or time.time()))
            self.refusing = self.refusing_since = None
            self._resumed.set()
        if self._observer is not None:
            self._observer.disk_measured(usage, self.limit_bytes, self.refusing is not None)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Measure every ``interval`` seconds until cancelled (the first time before
        ``task_status.started()``)."""
        await self.refresh()
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            await self.refresh()

    def to_json(self) -> dict[str, object]:
        """The status's ``disk`` object (node status and each timeline's lifecycle)."""
        usage = self.usage
        return {
            "path": str(self.path),
            "fs_size_bytes": None if usage is None else usage.size,
            "fs_used_bytes": None if usage is None else usage.used,
            "fs_available_bytes": None if usage is None else usage.available,
            "max_disk_usage": None if self.limit is None else str(self.limit),
            "limit_bytes": self.limit_bytes,
            "refusing": self.refusing,
            "refusing_since": self.refusing_since,
            "refused_appends": self.refused_appends,
        }


def _limit_text(limit: DiskLimit, fs_size: int) -> str:
    allowed = format_bytes(limit.limit_bytes(fs_size))
    return f"{limit.percent:g}% ({allowed})" if limit.percent is not None else allowed
