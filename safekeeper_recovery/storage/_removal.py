"""The removal horizon of a WAL store: below it, segments were (or are being) removed.

``wal_removed_before`` holds one LSN (a segment start) the store's WAL now begins at::

    u32 magic 0x5AFE4E40 | u32 version (1) | u64 lsn | u32 CRC32C     (little-endian)

It is replaced atomically and durably (written aside, fsynced, renamed, directory fsynced)
*before* any segment below it is unlinked, so a crash mid-removal leaves a store that opens
at the new start with some old segments still lying below it; ``FileWalStore.open`` then
finishes the removal. A store that never removed anything has no such file (stores made
before removal existed open unchanged).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Final

from ..core import CorruptionError, Lsn, StorageError, crc32c
from ._durable import replace_file_durably

__all__ = [
    "REMOVAL_HORIZON_FILE_NAME",
    "check_removal_target",
    "read_removal_horizon",
    "record_removal_horizon",
]

REMOVAL_HORIZON_FILE_NAME: Final = "wal_removed_before"
_MAGIC: Final = 0x5AFE4E40
_VERSION: Final = 1
_BODY: Final = struct.Struct("<IIQ")
_CRC: Final = struct.Struct("<I")


def record_removal_horizon(directory: Path, lsn: Lsn) -> None:
    """Durably record that the WAL in ``directory`` begins at ``lsn`` (raises ``OSError``)."""
    body = _BODY.pack(_MAGIC, _VERSION, int(lsn))
    replace_file_durably(directory / REMOVAL_HORIZON_FILE_NAME, body + _CRC.pack(crc32c(body)))


def read_removal_horizon(directory: Path) -> Lsn | None:
    """The recorded horizon, ``None`` if nothing was ever removed; ``CorruptionError`` if the
    file fails its checks."""
    path = directory / REMOVAL_HORIZON_FILE_NAME
    try:
        image = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read removal horizon {path}: {exc}") from exc
    if len(image) != _BODY.size + _CRC.size:
        raise CorruptionError(f"removal horizon file {path} has {len(image)} bytes, "
                              f"not {_BODY.size + _CRC.size}")
    (stored,) = _CRC.unpack_from(image, _BODY.size)
    if crc32c(image[: _BODY.size]) != stored:
        raise CorruptionError(f"removal horizon file {path} checksum mismatch")
    magic, version, lsn = _BODY.unpack_from(image)
    if magic != _MAGIC or version != _VERSION:
        raise CorruptionError(
            f"removal horizon file {path} has bad magic {magic:#010x} or version {version}")
    return Lsn(lsn)


def check_removal_target(lsn: Lsn, flush_lsn: Lsn, seg_size: int) -> None:
    """A removal horizon is a segment start at or below the flush position."""
    if lsn.segment_offset(seg_size) != 0:
        raise StorageError(f"cannot remove WAL below {lsn}: not a segment start")
    if lsn > flush_lsn:
        raise StorageError(
            f"cannot remove WAL below {lsn}: it is beyond the flush position {flush_lsn}")
