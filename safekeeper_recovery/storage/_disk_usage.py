"""How full the file system of a directory is (the disk guard's measurement, rule U1).

:func:`measure_disk_usage` is one ``statvfs`` call: blocking I/O, so async callers run it
in a worker thread (a network mount can take a while to answer).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import final

import attrs

__all__ = ["DiskUsage", "measure_disk_usage"]


@final
@attrs.frozen
class DiskUsage:
    """``size``: bytes of the file system; ``used``: bytes the node cannot write any more
    (``size - available``, so root's reserved blocks count as used); ``available``: bytes
    an unprivileged writer may still write."""

    size: int
    used: int
    available: int

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.size if self.size else 100.0


def measure_disk_usage(path: Path) -> DiskUsage:
    """The usage of the file system holding ``path``. Raises ``OSError``."""
    st = os.statvfs(path)
    size = st.f_blocks * st.f_frsize
    available = st.f_bavail * st.f_frsize
    return DiskUsage(size=size, used=max(0, size - available), available=available)
