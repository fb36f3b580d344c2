"""The pending-truncation mark: a crash during a truncation makes the next open redo it.

``truncate.pending`` holds ``u32 magic | u64 target lsn | u32 crc32c`` (little-endian). It
is created atomically (written aside, fsynced, renamed, directory fsynced) before a
truncation touches anything, and removed durably after the truncation is complete.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Final

from ..core import CorruptionError, Lsn, crc32c
from ._durable import remove_durably, replace_file_durably

__all__ = ["TRUNCATION_MARK_FILE_NAME", "clear_mark", "read_mark", "write_mark"]

TRUNCATION_MARK_FILE_NAME: Final = "truncate.pending"
_MAGIC: Final = 0x5AFE7A11
_BODY: Final = struct.Struct("<IQ")
_CRC: Final = struct.Struct("<I")


def write_mark(directory: Path, lsn: Lsn) -> None:
    """Durably record that a truncation to ``lsn`` is under way. Raises ``OSError``."""
    body = _BODY.pack(_MAGIC, int(lsn))
    replace_file_durably(directory / TRUNCATION_MARK_FILE_NAME, body + _CRC.pack(crc32c(body)))


def read_mark(directory: Path) -> Lsn | None:
    """The pending truncation's target, or ``None`` if none is pending.

    Raises ``CorruptionError`` if the mark exists but fails verification (it is written
    atomically, so that is not a torn write) and ``OSError`` if it cannot be read.
    """
    path = directory / TRUNCATION_MARK_FILE_NAME
    try:
        image = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(image) != _BODY.size + _CRC.size:
        raise CorruptionError(f"truncation mark {path} has {len(image)} bytes")
    (stored,) = _CRC.unpack_from(image, _BODY.size)
    magic, lsn = _BODY.unpack_from(image)
    if crc32c(image[: _BODY.size]) != stored or magic != _MAGIC:
        raise CorruptionError(f"truncation mark {path} checksum mismatch")
    return Lsn(lsn)


def clear_mark(directory: Path) -> None:
    """Durably remove the mark (the truncation is complete). Raises ``OSError``."""
    remove_durably(directory / TRUNCATION_MARK_FILE_NAME)
