"""The durable end of WAL, recorded explicitly in a small two-slot file.

WAL is opaque bytes, so the store cannot find where valid WAL ends by decoding it (Neon
decodes PostgreSQL records for that). Instead, after every WAL fdatasync and before any
acknowledgement, the new flush position is written to ``flush_position``::

    offset    0: header  u32 magic | u32 version | u64 seg_size | u64 start_lsn | u32 crc
    offset  512: slot 0  u64 sequence | u64 lsn | u32 crc
    offset 1024: slot 1  u64 sequence | u64 lsn | u32 crc

(little-endian; each CRC32C covers the fields before it). The header is written once, when
the timeline is created, by an atomic durable rename. Each update goes with ``pwrite`` +
``fdatasync`` into the slot holding the *older* sequence, so a torn write can only damage
that slot and the newer one stays valid. Loading picks the valid slot with the highest
sequence. The slots sit in different 512-byte sectors so one torn sector cannot hit both.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Final, final

from ..core import CorruptionError, Lsn, StorageError, crc32c
from . import _fileops as fileops
from ._durable import pwrite_all, replace_file_durably

__all__ = ["FLUSH_POSITION_FILE_NAME", "FlushPositionFile"]

FLUSH_POSITION_FILE_NAME: Final = "flush_position"
_MAGIC: Final = 0x5AFEF105
_VERSION: Final = 1
_HEADER: Final = struct.Struct("<IIQQ")
_SLOT: Final = struct.Struct("<QQ")
_CRC: Final = struct.Struct("<I")
_SLOT_OFFSETS: Final = (512, 1024)
_FILE_SIZE: Final = 1536


def _with_crc(fields: bytes) -> bytes:
    return fields + _CRC.pack(crc32c(fields))


def _encode_slot(sequence: int, lsn: Lsn) -> bytes:
    return _with_crc(_SLOT.pack(sequence, int(lsn)))


def _decode_slot(image: bytes, offset: int) -> tuple[int, Lsn] | None:
    """``(sequence, lsn)`` of the slot at ``offset``, or ``None`` if it is torn or empty."""
    raw = image[offset : offset + _SLOT.size + _CRC.size]
    if len(raw) != _SLOT.size + _CRC.size:
        return None
    (stored,) = _CRC.unpack_from(raw, _SLOT.size)
    if crc32c(raw[: _SLOT.size]) != stored:
        return None
    sequence, lsn = _SLOT.unpack_from(raw)
    return sequence, Lsn(lsn)


@final
class FlushPositionFile:
    """An open ``flush_position`` file. Blocking; not thread-safe; ``close()`` releases it.

    Build with ``create`` (new timeline) or ``open`` (existing one), never directly.
    """

    def __init__(
        self,
        path: Path,
        fd: int,
        seg_size: int,
        start_lsn: Lsn,
        lsn: Lsn,
        sequence: int,
        slot: int,
    ) -> None:
        self._path = path
        self._fd: int | None = fd
        self._seg_size = seg_size
        self._start_lsn = start_lsn
        self._lsn = lsn
        self._sequence = sequence
        self._slot = slot  # index of the slot holding the newest sequence

    @staticmethod
    def exists(directory: Path) -> bool:
        """Whether ``directory`` holds a flush-position file (i.e. a created WAL store)."""
        return (directory / FLUSH_POSITION_FILE_NAME).exists()

    @classmethod
    def create(cls, directory: Path, seg_size: int, start_lsn: Lsn) -> FlushPositionFile:
        """Durably create the file recording ``start_lsn`` as both start and flush position.

        The file appears atomically (written aside, fsynced, renamed, directory fsynced).
        Raises ``StorageError`` if it already exists or cannot be written.
        """
        path = directory / FLUSH_POSITION_FILE_NAME
        if path.exists():
            raise StorageError(f"flush position file {path} already exists")
        image = bytearray(_FILE_SIZE)
        header = _with_crc(_HEADER.pack(_MAGIC, _VERSION, seg_size, int(start_lsn)))
        image[: len(header)] = header
        slot0 = _encode_slot(1, start_lsn)
        image[_SLOT_OFFSETS[0] : _SLOT_OFFSETS[0] + len(slot0)] = slot0
        try:
            replace_file_durably(path, bytes(image))
            fd = fileops.open(path, os.O_RDWR)
        except OSError as exc:
            raise StorageError(f"cannot create flush position file {path}: {exc}") from exc
        return cls(path, fd, seg_size, start_lsn, start_lsn, 1, 0)

    @classmethod
    def open(cls, directory: Path) -> FlushPositionFile | None:
        """Open and verify the file; ``None`` if it does not exist (a new store).

        Raises ``CorruptionError`` if the header is invalid, both slots are invalid, or the
        recorded position is below the start; ``StorageError`` on I/O errors.
        """
        path = directory / FLUSH_POSITION_FILE_NAME
        try:
            fd = fileops.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot open flush position file {path}: {exc}") from exc
        try:
            return cls._load(path, fd)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def _load(cls, path: Path, fd: int) -> FlushPositionFile:
        try:
            image = fileops.pread(fd, _FILE_SIZE, 0)
        except OSError as exc:
            raise StorageError(f"cannot read flush position file {path}: {exc}") from exc
        head_len = _HEADER.size + _CRC.size
        if len(image) < head_len:
            raise CorruptionError(f"flush position file {path} is truncated ({len(image)} bytes)")
        (stored,) = _CRC.unpack_from(image, _HEADER.size)
        if crc32c(image[: _HEADER.size]) != stored:
            raise CorruptionError(f"flush position file {path} header checksum mismatch")
        magic, version, seg_size, start = _HEADER.unpack_from(image)
        if magic != _MAGIC or version != _VERSION:
            raise CorruptionError(
                f"flush position file {path} has bad magic {magic:#010x} or version {version}"
            )
        slots = [_decode_slot(image, offset) for offset in _SLOT_OFFSETS]
        valid = [
            (seq, lsn, index) for index, s in enumerate(slots) if s is not None for seq, lsn in [s]
        ]
        if not valid:
            raise CorruptionError(f"flush position file {path}: both slots fail their checksum")
        sequence, lsn, slot = max(valid)
        start_lsn = Lsn(start)
        if lsn < start_lsn:
            raise CorruptionError(
                f"flush position file {path}: flush position {lsn} is below start {start_lsn}"
            )
        return cls(path, fd, seg_size, start_lsn, lsn, sequence, slot)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def seg_size(self) -> int:
        """Segment size fixed when the timeline was created."""
        return self._seg_size

    @property
    def start_lsn(self) -> Lsn:
        """Where the store's WAL begins (fixed at creation)."""
        return self._start_lsn

    @property
    def lsn(self) -> Lsn:
        """The durably recorded flush position."""
        return self._lsn

    def record(self, lsn: Lsn) -> None:
        """Durably record ``lsn`` as the flush position (pwrite + fdatasync) before returning.

        A no-op if ``lsn`` is already recorded. Raises ``StorageError`` on I/O errors (the
        previous position then stays valid on disk) or if the file is closed.
        """
        if lsn == self._lsn:
            return
        if self._fd is None:
            raise StorageError(f"flush position file {self._path} is closed")
        target = 1 - self._slot  # the older slot: a torn write here leaves the newer intact
        sequence = self._sequence + 1
        try:
            pwrite_all(self._fd, _encode_slot(sequence, lsn), _SLOT_OFFSETS[target])
            fileops.fdatasync(self._fd)
        except OSError as exc:
            raise StorageError(
                f"cannot record flush position {lsn} in {self._path}: {exc}"
            ) from exc
        self._lsn, self._sequence, self._slot = lsn, sequence, target

    def close(self) -> None:
        """Close the file descriptor. Idempotent."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
