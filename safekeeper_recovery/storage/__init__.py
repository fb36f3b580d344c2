"""Durable storage: control file and WAL segment store, each with an in-memory twin.

Files in a timeline directory ``<data_dir>/<tenant_id>/<timeline_id>/``:
``safekeeper.control`` (``FileControlFileStore``), ``flush_position``, WAL segments
``<24 hex>`` / ``<24 hex>.partial``, and transiently ``waltmp``, ``truncate.pending``,
``*.partial`` temporaries (``FileWalStore``), ``wal_removed_before`` once WAL was removed,
and ``room.probe`` (:func:`check_room`).

WAL archives (``Archive``: ``FileArchive``, ``S3Archive`` via :func:`open_archive`, and the
``MemoryArchive`` twin) hold completed segments under ``<tenant>/<timeline>/<segment>``.

Every file call goes through ``_fileops``, the seam :class:`DiskFaults` uses to inject
``ENOSPC`` / ``EIO`` failures into chosen operations.
"""

from ._archive import (
    Archive,
    ArchiveObject,
    FileArchive,
    MemoryArchive,
    open_archive,
    segment_key,
    timeline_prefix,
)
from ._async_store import AsyncWalStore, AsyncWalStoreStatistics
from ._control_file import (
    CONTROL_FILE_NAME,
    ControlFileStore,
    FileControlFileStore,
    MemoryControlFileStore,
)
from ._disk_usage import DiskUsage, measure_disk_usage
from ._durable import check_room
from ._fileops import DiskFaults
from ._flush_position import FLUSH_POSITION_FILE_NAME, FlushPositionFile
from ._memory_wal import MemoryWalStore
from ._recent_wal import RecentWal, RecentWalBudget, recent_wal_budget
from ._removal import REMOVAL_HORIZON_FILE_NAME, read_removal_horizon
from ._segments import FileWalStore
from ._truncation_mark import TRUNCATION_MARK_FILE_NAME, read_mark
from ._wal_store import MAX_SEG_SIZE, MIN_SEG_SIZE, WalStore, validate_seg_size

__all__ = [
    "Archive",
    "ArchiveObject",
    "AsyncWalStore",
    "AsyncWalStoreStatistics",
    "CONTROL_FILE_NAME",
    "ControlFileStore",
    "DiskFaults",
    "DiskUsage",
    "FLUSH_POSITION_FILE_NAME",
    "FileArchive",
    "FileControlFileStore",
    "FileWalStore",
    "FlushPositionFile",
    "MAX_SEG_SIZE",
    "MIN_SEG_SIZE",
    "MemoryArchive",
    "MemoryControlFileStore",
    "MemoryWalStore",
    "REMOVAL_HORIZON_FILE_NAME",
    "RecentWal",
    "RecentWalBudget",
    "TRUNCATION_MARK_FILE_NAME",
    "WalStore",
    "check_room",
    "measure_disk_usage",
    "open_archive",
    "read_mark",
    "read_removal_horizon",
    "recent_wal_budget",
    "segment_key",
    "timeline_prefix",
    "validate_seg_size",
]
