"""The disk guard's rules (pure): when a node stops taking new WAL because its disk is full.

U1  The limit is ``--max-disk-usage``: a number of bytes or a percentage of the size of the
    file system that holds the data directory (default 95 %; ``off`` disables the guard).
    *Usage* is the file system's size minus the space the node may still write
    (``statvfs``: ``(f_blocks - f_bavail) * f_frsize``): space reserved for root, which the
    node cannot use, counts as used.
U2  While usage is past the limit the node refuses every append that carries WAL, from a
    proposer and from peer recovery, with ``DiskUsageExceeded`` (WebSocket close code
    4012, the reason in the close frame); none of its WAL is written, but its header is
    taken as an empty append would be, and the WAL taken before it is flushed and
    acknowledged (so ``commit_lsn`` moves on: it is what lets committed WAL be archived
    and removed when nothing else gets through). Everything else goes on: elections,
    ``commit_lsn``, WAL streams and reads, archive uploads and WAL removal, which are
    what frees space. Peer recovery pauses.
U3  The node takes appends again once usage is at or below the limit minus a margin (1 %
    of the file system, at most 64 MiB), without a restart: one freed segment must not
    make it flap between refusing and taking.
U4  Usage is measured every second, and again before an append whose bytes, added to the
    last measurement, would pass the limit. Segment files are created whole
    (preallocated), so usage can pass the limit by at most the segments being created at
    that moment (one per timeline being written).
"""

from __future__ import annotations

import math
from typing import Final, final

import attrs

__all__ = ["DEFAULT_MAX_DISK_PERCENT", "DiskLimit", "guard_refuses", "resume_margin"]

DEFAULT_MAX_DISK_PERCENT: Final = 95.0
_MAX_MARGIN: Final = 64 << 20


@final
@attrs.frozen
class DiskLimit:
    """U1: ``max_bytes`` of usage, or ``percent`` of the file system (exactly one set)."""

    max_bytes: int | None = None
    percent: float | None = None

    def __attrs_post_init__(self) -> None:
        if (self.max_bytes is None) == (self.percent is None):
            raise ValueError("a disk limit is either bytes or a percentage")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ValueError(f"a disk limit must be positive, got {self.max_bytes}")
        if self.percent is not None and not (0 < self.percent <= 100
                                             and math.isfinite(self.percent)):
            raise ValueError(f"a disk limit percentage must be in (0, 100], got {self.percent}")

    def limit_bytes(self, fs_size: int) -> int:
        """The usage allowed on a file system of ``fs_size`` bytes."""
        if self.max_bytes is not None:
            return self.max_bytes
        assert self.percent is not None
        return int(fs_size * self.percent / 100)

    def __str__(self) -> str:
        if self.percent is not None:
            return f"{self.percent:g}%"
        return f"{self.max_bytes} bytes"


def resume_margin(fs_size: int) -> int:
    """U3: how far below the limit usage must fall before appends are taken again."""
    return min(_MAX_MARGIN, fs_size // 100)


def guard_refuses(used: int, fs_size: int, limit: DiskLimit, refusing: bool) -> bool:
    """U2/U3: whether appends are refused at ``used`` bytes of usage, given whether they
    were refused until now."""
    allowed = limit.limit_bytes(fs_size)
    if refusing:
        return used > allowed - resume_margin(fs_size)
    return used > allowed
