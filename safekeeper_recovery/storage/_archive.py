"""WAL archive stores: where completed segments go before a node may remove them.

Theory of operation
-------------------
An archive maps keys (``<tenant_id>/<timeline_id>/<segment file name>``, see
:func:`segment_key`) to immutable objects. Three implementations behind one async
Protocol: :class:`FileArchive` (``file:///DIR``, a local disk or a network mount),
``S3Archive`` (``s3://BUCKET/PREFIX``, ``_s3_archive.py``) and :class:`MemoryArchive`
(the in-memory twin for tests).

A1  Every object carries its size and SHA-256, recorded at upload (S3: object metadata,
    sent with the body in one request; file: a ``<key>.sha256`` record written before the
    object appears). ``put`` returns only after reading the record back and comparing it.
A2  ``get`` returns an object's bytes only after checking both against that record: a
    truncated or corrupted object (or one without a record) raises ``ArchiveCorrupted``
    and is never served as WAL. A missing one raises ``ArchiveObjectMissing``.
A3  An object appears atomically: a reader sees the old object, the new one, or none
    (file: written aside, fsynced, renamed, directory fsynced; S3: one PUT).
A4  Every other failure is an ``ArchiveError`` whose ``kind`` says what to fix
    (``unreachable``, ``auth``, ``no_bucket``, ``io``, …) and whose message names the
    archive. Blocking calls run on worker threads; nothing blocks the event loop.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Final, Protocol, final
from urllib.parse import unquote, urlsplit

import attrs
import trio

from ..core import (
    ArchiveCorrupted,
    ArchiveError,
    ArchiveObjectMissing,
    TenantTimelineId,
    segment_file_name,
)
from . import _fileops as fileops
from ._durable import discard_quietly, fsync_directory, pwrite_all

__all__ = [
    "Archive",
    "ArchiveObject",
    "FileArchive",
    "MemoryArchive",
    "check_key",
    "open_archive",
    "segment_key",
    "timeline_prefix",
    "verify_object",
]

_KEY_RE: Final = re.compile(r"[0-9A-Za-z_.-]+(/[0-9A-Za-z_.-]+)*")
_RECORD_SUFFIX: Final = ".sha256"


@final
@attrs.frozen
class ArchiveObject:
    """An archived object's key and the integrity record stored with it (rule A1)."""

    key: str
    size: int
    sha256: str
    """Lower-case hex SHA-256 of the object's bytes."""


class Archive(Protocol):
    """A WAL archive (module rules A1-A4). Safe to call from several tasks at once."""

    @property
    def url(self) -> str:
        """The archive's URL as configured (never with credentials), for messages."""
        ...

    async def put(self, key: str, data: bytes) -> ArchiveObject:
        """Store ``data`` under ``key`` (replacing any object there), then read its record
        back and check size and SHA-256 (A1). Raises ``ArchiveError``."""
        ...

    async def get(self, key: str) -> bytes:
        """The verified bytes of ``key`` (A2). Raises ``ArchiveObjectMissing``,
        ``ArchiveCorrupted`` or ``ArchiveError``."""
        ...

    async def head(self, key: str) -> ArchiveObject | None:
        """The record of ``key`` without its bytes, ``None`` if there is no object."""
        ...

    async def list(self, prefix: str) -> list[str]:
        """Keys of the objects under ``prefix`` (a key prefix ending in ``/``), sorted."""
        ...

    async def check(self) -> None:
        """Raise ``ArchiveError`` (naming what to fix) unless the archive answers: the
        directory exists, the bucket exists and the credentials are accepted."""
        ...


def timeline_prefix(ttid: TenantTimelineId) -> str:
    """``<tenant_id>/<timeline_id>/``: where a timeline's segments are archived."""
    return f"{ttid.tenant_id}/{ttid.timeline_id}/"


def segment_key(ttid: TenantTimelineId, segno: int, seg_size: int) -> str:
    """The archive key of segment ``segno``: its PostgreSQL name under the timeline."""
    return timeline_prefix(ttid) + segment_file_name(segno, seg_size)


def check_key(key: str) -> str:
    """``key`` if it is a plain relative path of safe characters (no ``..``), else
    ``ValueError``: keys become file paths in a :class:`FileArchive`."""
    if not _KEY_RE.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid archive key {key!r}")
    return key


def verify_object(where: str, data: bytes, size: int, sha256: str) -> bytes:
    """Rule A2: ``data`` if it has ``size`` bytes and that SHA-256, else ``ArchiveCorrupted``
    naming ``where``."""
    if len(data) != size:
        raise ArchiveCorrupted(
            f"archive object {where} is truncated or overlong: {len(data)} bytes, recorded "
            f"{size} at upload; it is not used (re-archive the segment or restore it)")
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ArchiveCorrupted(
            f"archive object {where} is corrupted: SHA-256 {actual}, recorded {sha256} at "
            "upload; it is not used (re-archive the segment or restore it)")
    return data


def _check_put(where: str, expected: ArchiveObject, got: ArchiveObject | None) -> ArchiveObject:
    if got is None or (got.size, got.sha256) != (expected.size, expected.sha256):
        raise ArchiveCorrupted(
            f"archive object {where} does not read back as uploaded: recorded {got}, "
            f"uploaded size {expected.size} sha256 {expected.sha256}")
    return got


@final
class MemoryArchive:
    """In-memory twin of the archives for tests: same rules, no I/O.

    ``objects`` maps keys to bytes and ``records`` keys to ``(size, sha256)``: a test
    corrupts an object by changing ``objects`` behind the record. While ``failure`` is
    set, every call raises it (an unreachable archive, refused credentials, …).
    """

    def __init__(self, url: str = "memory://") -> None:
        self._url = url
        self.objects: dict[str, bytes] = {}
        self.records: dict[str, tuple[int, str]] = {}
        self.failure: ArchiveError | None = None
        self.puts = 0

    @property
    def url(self) -> str:
        return self._url

    async def _enter(self) -> None:
        await trio.lowlevel.checkpoint()
        if self.failure is not None:
            raise self.failure

    async def put(self, key: str, data: bytes) -> ArchiveObject:
        await self._enter()
        check_key(key)
        sha = hashlib.sha256(data).hexdigest()
        self.objects[key] = bytes(data)
        self.records[key] = (len(data), sha)
        self.puts += 1
        expected = ArchiveObject(key, len(data), sha)
        return _check_put(f"{self._url}{key}", expected, await self.head(key))

    async def get(self, key: str) -> bytes:
        await self._enter()
        record = self.records.get(key)
        if key not in self.objects:
            raise ArchiveObjectMissing(f"no object {key} in archive {self._url}")
        if record is None:
            raise ArchiveCorrupted(f"archive object {self._url}{key} has no checksum record")
        return verify_object(f"{self._url}{key}", self.objects[key], *record)

    async def head(self, key: str) -> ArchiveObject | None:
        await self._enter()
        record = self.records.get(key)
        if key not in self.objects or record is None:
            return None
        return ArchiveObject(key, *record)

    async def list(self, prefix: str) -> list[str]:
        await self._enter()
        return sorted(k for k in self.objects if k.startswith(prefix))

    async def check(self) -> None:
        await self._enter()


@final
class FileArchive:
    """An archive in a directory (``file:///DIR``): object ``<DIR>/<key>`` and its record
    ``<DIR>/<key>.sha256`` (``"<sha256 hex> <size>\\n"``).

    ``put`` writes the record first, then the object aside (``<key>.<random>.partial``),
    fsyncs, renames and fsyncs the directory (A3): an object never appears without its record,
    and a crash leaves at most a record of an object that is not there yet (a later
    ``put`` replaces both). The directory must exist (a missing mount must not silently
    fill the local disk): :meth:`check` and every call say so.
    """

    def __init__(self, root: Path, url: str | None = None) -> None:
        self._root = root
        self._url = url if url is not None else f"file://{root}"

    @property
    def url(self) -> str:
        return self._url

    @property
    def root(self) -> Path:
        return self._root

    def _path(self, key: str) -> Path:
        return self._root / check_key(key)

    def _failure(self, what: str, exc: OSError) -> ArchiveError:
        if not self._root.is_dir():
            return ArchiveError(
                f"archive directory {self._root} ({self._url}) does not exist or is not a "
                "directory: create it, or mount the archive there", kind="unreachable")
        return ArchiveError(f"cannot {what} in archive {self._url}: {exc}", kind="io")

    def _put(self, key: str, data: bytes) -> ArchiveObject:
        path = self._path(key)
        sha = hashlib.sha256(data).hexdigest()
        expected = ArchiveObject(key, len(data), sha)
        try:
            if not self._root.is_dir():
                raise FileNotFoundError(str(self._root))
            self._make_parents(path.parent)
            _replace_durably(self._record_path(path), f"{sha} {len(data)}\n".encode())
            _replace_durably(path, data)
        except OSError as exc:
            raise self._failure(f"store {key}", exc) from exc
        return _check_put(f"{self._url}/{key}", expected, self._head(key))

    def _make_parents(self, directory: Path) -> None:
        missing: list[Path] = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for made in reversed(missing):
            made.mkdir(exist_ok=True)
            fsync_directory(made.parent)  # the new directory's entry survives a crash

    @staticmethod
    def _record_path(path: Path) -> Path:
        return path.with_name(path.name + _RECORD_SUFFIX)

    def _read_record(self, key: str, path: Path) -> tuple[int, str] | None:
        try:
            text = self._record_path(path).read_text()
        except FileNotFoundError:
            return None
        sha, _, size = text.strip().partition(" ")
        if not re.fullmatch(r"[0-9a-f]{64}", sha) or not size.isdigit():
            raise ArchiveCorrupted(
                f"archive object {self._url}/{key} has an unreadable checksum record")
        return int(size), sha

    def _head(self, key: str) -> ArchiveObject | None:
        path = self._path(key)
        try:
            if not path.exists():
                return None
            record = self._read_record(key, path)
        except OSError as exc:
            raise self._failure(f"read {key}", exc) from exc
        if record is None:
            raise ArchiveCorrupted(f"archive object {self._url}/{key} has no checksum record "
                                   f"({self._record_path(path).name})")
        return ArchiveObject(key, *record)

    def _get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            fd = fileops.open(path, os.O_RDONLY)
        except FileNotFoundError:
            if not self._root.is_dir():
                raise self._failure(f"read {key}", FileNotFoundError(str(path))) from None
            raise ArchiveObjectMissing(f"no object {key} in archive {self._url}") from None
        except OSError as exc:
            raise self._failure(f"read {key}", exc) from exc
        try:
            with os.fdopen(fd, "rb") as f:
                data = f.read()
            record = self._read_record(key, path)
        except OSError as exc:
            raise self._failure(f"read {key}", exc) from exc
        if record is None:
            raise ArchiveCorrupted(f"archive object {self._url}/{key} has no checksum record")
        return verify_object(f"{self._url}/{key}", data, *record)

    def _list(self, prefix: str) -> list[str]:
        directory = self._root / check_key(prefix.rstrip("/"))
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            if not self._root.is_dir():
                raise self._failure("list", FileNotFoundError(str(self._root))) from None
            return []
        except OSError as exc:
            raise self._failure(f"list {prefix}", exc) from exc
        return sorted(prefix + n for n in names
                      if not n.endswith((_RECORD_SUFFIX, ".partial"))
                      and (directory / n).is_file())

    def _check(self) -> None:
        if not self._root.is_dir():
            raise self._failure("open", FileNotFoundError(str(self._root)))
        if not os.access(self._root, os.W_OK | os.X_OK):
            raise ArchiveError(f"archive directory {self._root} ({self._url}) is not "
                               "writable by this process: fix its permissions", kind="auth")

    async def put(self, key: str, data: bytes) -> ArchiveObject:
        return await trio.to_thread.run_sync(self._put, key, data)

    async def get(self, key: str) -> bytes:
        return await trio.to_thread.run_sync(self._get, key)

    async def head(self, key: str) -> ArchiveObject | None:
        return await trio.to_thread.run_sync(self._head, key)

    async def list(self, prefix: str) -> list[str]:
        return await trio.to_thread.run_sync(self._list, prefix)

    async def check(self) -> None:
        await trio.to_thread.run_sync(self._check)

    def __repr__(self) -> str:
        return f"FileArchive({str(self._root)!r})"


def _replace_durably(path: Path, data: bytes) -> None:
    """Make ``path`` hold ``data`` atomically and durably (written aside under a name of
    its own, fsynced, renamed, directory fsynced). The temporary name is unique per call:
    two nodes may archive the same segment at once (rule L1), and a shared name would let
    one truncate the other's half-written file. Raises ``OSError``."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(8)}.partial")
    fd = fileops.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            pwrite_all(fd, data, 0)
            fileops.fsync(fd)
        finally:
            os.close(fd)
        fileops.replace(tmp, path)
    except BaseException:
        discard_quietly(tmp)
        raise
    fsync_directory(path.parent)


def open_archive(url: str, *, endpoint: str | None = None) -> Archive:
    """The archive of ``url``: ``file:///DIR`` or ``s3://BUCKET[/PREFIX]`` (``endpoint``:
    an S3-compatible server's URL; credentials and region from the ``AWS_*`` environment).

    Opens nothing yet (no I/O, no network): the first call does. Raises ``ValueError``
    for any other URL, naming the forms accepted.
    """
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path:
        if endpoint is not None:
            raise ValueError("--archive-endpoint is for s3:// archives only")
        return FileArchive(Path(unquote(parts.path)), url)
    if parts.scheme == "s3" and parts.netloc:
        from ._s3_archive import S3Archive  # boto3 loads only when S3 is used

        return S3Archive(parts.netloc, parts.path.strip("/"), url=url, endpoint=endpoint)
    raise ValueError(
        f"unsupported archive URL {url!r}: use file:///ABSOLUTE/DIR or s3://BUCKET/PREFIX")
