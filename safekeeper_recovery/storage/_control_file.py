"""The control file: the timeline's opaque persistent state, replaced atomically.

Layout of ``safekeeper.control`` (all integers little-endian)::

    u32 magic 0x5AFEC0DE | u32 format version (1) | u32 body length | body | u32 CRC32C

The CRC covers every preceding byte. The caller serialises its own state into ``body``;
this module only guarantees that what ``load`` returns is exactly what the last completed
``persist`` stored, or raises ``CorruptionError``.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Final, Protocol, final

from ..core import CorruptionError, StorageError, crc32c
from ._durable import replace_file_durably

__all__ = [
    "CONTROL_FILE_NAME",
    "ControlFileStore",
    "FileControlFileStore",
    "MemoryControlFileStore",
    "decode_control_file",
    "encode_control_file",
]

CONTROL_FILE_NAME: Final = "safekeeper.control"
_MAGIC: Final = 0x5AFEC0DE
_FORMAT_VERSION: Final = 1
_HEADER: Final = struct.Struct("<III")
_CRC: Final = struct.Struct("<I")


class ControlFileStore(Protocol):
    """Where a timeline keeps its control-file body. Blocking; callers serialise calls."""

    def load(self) -> bytes | None:
        """Return the last persisted body, or ``None`` if nothing was ever persisted.

        Raises ``CorruptionError`` if the stored file fails verification and
        ``StorageError`` if it cannot be read.
        """
        ...

    def persist(self, body: bytes) -> None:
        """Store ``body`` durably; when this returns, a crash cannot lose it.

        Raises ``StorageError`` if the body could not be made durable; the previously
        persisted body is then still the one ``load`` returns.
        """
        ...


def encode_control_file(body: bytes) -> bytes:
    """The on-disk image of ``body`` (header, body, CRC32C)."""
    head = _HEADER.pack(_MAGIC, _FORMAT_VERSION, len(body)) + body
    return head + _CRC.pack(crc32c(head))


def decode_control_file(image: bytes, origin: str) -> bytes:
    """Verify an on-disk image and return its body.

    ``origin`` names the file in error messages. Raises ``CorruptionError`` on a short
    file, wrong magic, unknown version, inconsistent length or checksum mismatch.
    """
    if len(image) < _HEADER.size + _CRC.size:
        raise CorruptionError(
            f"control file {origin} is truncated: {len(image)} bytes, "
            f"need at least {_HEADER.size + _CRC.size}"
        )
    magic, version, body_len = _HEADER.unpack_from(image)
    if magic != _MAGIC:
        raise CorruptionError(
            f"control file {origin} has bad magic {magic:#010x} (expected {_MAGIC:#010x})"
        )
    if version != _FORMAT_VERSION:
        raise CorruptionError(
            f"control file {origin} has unsupported format version {version} "
            f"(this build reads {_FORMAT_VERSION})"
        )
    expected_len = _HEADER.size + body_len + _CRC.size
    if len(image) != expected_len:
        raise CorruptionError(
            f"control file {origin} length mismatch: {len(image)} bytes, header says {expected_len}"
        )
    (stored_crc,) = _CRC.unpack_from(image, len(image) - _CRC.size)
    if crc32c(image[: -_CRC.size]) != stored_crc:
        raise CorruptionError(f"control file {origin} checksum mismatch")
    return image[_HEADER.size : -_CRC.size]


@final
class FileControlFileStore:
    """``ControlFileStore`` backed by ``<directory>/safekeeper.control``.

    ``persist`` writes ``safekeeper.control.partial``, fsyncs it, renames it over the
    control file and fsyncs the directory, so a crash leaves the old or the new body. The
    directory must exist; the store holds no open file between calls (nothing to close).
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._path = directory / CONTROL_FILE_NAME

    @property
    def path(self) -> Path:
        """The control file's path."""
        return self._path

    def load(self) -> bytes | None:
        try:
            image = self._path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read control file {self._path}: {exc}") from exc
        return decode_control_file(image, str(self._path))

    def persist(self, body: bytes) -> None:
        try:
            replace_file_durably(self._path, encode_control_file(body))
        except OSError as exc:
            raise StorageError(f"cannot persist control file {self._path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"FileControlFileStore({str(self._directory)!r})"


@final
class MemoryControlFileStore:
    """In-memory ``ControlFileStore`` twin: ``persist`` is instantly "durable".

    ``persist_count`` counts persists so tests can assert that a reply waited for one.
    """

    def __init__(self, body: bytes | None = None) -> None:
        self._body = body
        self.persist_count = 0

    def load(self) -> bytes | None:
        return self._body

    def persist(self, body: bytes) -> None:
        self._body = bytes(body)
        self.persist_count += 1

    def __repr__(self) -> str:
        return f"MemoryControlFileStore(persist_count={self.persist_count})"
