"""``FileWalStore``: WAL in PostgreSQL-named segment files, one directory per timeline.

Files in the timeline directory (besides the control file, which is not ours):

* ``<24 hex digits>``: a complete segment (fdatasynced when it was filled).
* ``<24 hex digits>.partial``: the segment being written (at most one matters: the one
  holding ``flush_lsn``/``write_lsn``).
* ``waltmp``: a segment under construction; never visible under a segment name until it
  is full-size and fsynced.
* ``flush_position``: start LSN, segment size and the durable end of WAL (two CRC slots).
* ``truncate.pending``: present only while a truncation is in progress.
* ``wal_removed_before``: where the WAL begins since segments were removed from its start
  (``remove_before``; absent until the first removal, see ``_removal.py``).

Every segment is created full-size (``posix_fallocate``), so its size never changes after
creation and ``fdatasync`` is enough to make written bytes durable. Positions past the
recorded flush position are treated as never written: open settles the directory to match
(redoes a pending truncation, removes segments past the flush position, renames the
flush position's segment to ``.partial``, finishes an interrupted removal).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, final

from ..core import CorruptionError, Lsn, StorageError, segment_file_name
from . import _fileops as fileops
from ._direct import BLOCK, read_direct, refused_devices, write_direct
from ._durable import (
    discard_quietly,
    fsync_directory,
    pwrite_all,
    pwritev_all,
    remove_durably,
)
from ._flush_position import FLUSH_POSITION_FILE_NAME, FlushPositionFile
from ._removal import (
    REMOVAL_HORIZON_FILE_NAME,
    check_removal_target,
    read_removal_horizon,
    record_removal_horizon,
)
from ._truncation_mark import TRUNCATION_MARK_FILE_NAME, clear_mark, read_mark, write_mark
from ._wal_store import (
    check_digest_range,
    check_readable,
    check_truncate_target,
    check_write_position,
    readable_length,
    validate_seg_size,
)

__all__ = ["FileWalStore"]

log = logging.getLogger(__name__)

_PARTIAL: Final = ".partial"
_TMP_SEGMENT: Final = "waltmp"
_SEGMENT_RE: Final = re.compile(r"^([0-9A-F]{24})(\.partial)?$")
_ZEROS: Final = bytes(1 << 20)
_DIGEST_CHUNK: Final = 1 << 20


def _parse_segment_name(name: str, seg_size: int) -> tuple[int, bool] | None:
    """``(segno, is_partial)`` for a segment-shaped name of TLI 1, else ``None``."""
    match = _SEGMENT_RE.match(name)
    if match is None:
        return None
    base = match.group(1)
    per_xlogid = 0x1_0000_0000 // seg_size
    tli, hi, lo = int(base[:8], 16), int(base[8:16], 16), int(base[16:], 16)
    if tli != 1 or lo >= per_xlogid:
        return None
    return hi * per_xlogid + lo, match.group(2) is not None


def _preallocate(fd: int, size: int) -> None:
    """Give a new segment file its full size with allocated blocks.

    ``posix_fallocate`` avoids writing every byte twice; file systems that do not support
    it (EOPNOTSUPP, EINVAL) get zeros written instead, which is slower but equivalent.
    """
    try:
        fileops.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        for offset in range(0, size, len(_ZEROS)):
            pwrite_all(fd, _ZEROS[: min(len(_ZEROS), size - offset)], offset)


@final
class FileWalStore:
    """A ``WalStore`` on local files. Blocking and not thread-safe: callers serialise calls.

    Build one with ``create`` (brand-new timeline) or ``open`` (existing timeline): use
    ``FileWalStore.exists(directory)`` to choose. The store owns its file descriptors;
    ``close()`` (or leaving a ``with`` block) releases them and does not flush.
    """

    def __init__(
        self, directory: Path, positions: FlushPositionFile, *, direct_io: bool = False
    ) -> None:
        """Private: use ``create`` or ``open``."""
        self._dir = directory
        # O_DIRECT writes (see _direct.py); dropped for good if the file system refuses.
        self._direct = direct_io and hasattr(os, "O_DIRECT")
        self._head = b""  # direct I/O: file bytes from the block start to _write_lsn
        self._head_lsn: Lsn | None = None  # the _write_lsn _head belongs to (None: unknown)
        self._positions = positions
        self._seg_size = positions.seg_size
        self._start_lsn = positions.start_lsn
        self._flush_lsn = positions.lsn
        self._write_lsn = positions.lsn
        self._fd: int | None = None  # open .partial segment being written
        self._fd_segno = -1
        self._unsynced = False  # bytes written to self._fd since its last fdatasync
        self._truncation_pending = False
        self._closed = False

    # -- construction ------------------------------------------------------------------

    @staticmethod
    def exists(directory: Path) -> bool:
        """Whether ``directory`` holds a created store (its ``flush_position`` file)."""
        return FlushPositionFile.exists(directory)

    @classmethod
    def create(
        cls, directory: Path, seg_size: int, start_lsn: Lsn, *, direct_io: bool = False
    ) -> FileWalStore:
        """Create a brand-new store whose WAL starts (and is flushed up to) ``start_lsn``.

        Creates ``directory`` if needed. Leftovers of an earlier create that crashed before
        it completed (segment files, ``waltmp``) are removed: no WAL was acknowledged from
        them. The ``flush_position`` file, written durably last, is the commit point.
        Raises ``StorageError`` if a store already exists there, ``ValueError`` for an
        invalid ``seg_size``. ``direct_io``: as for ``open``.
        """
        validate_seg_size(seg_size)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if FlushPositionFile.exists(directory):
                raise StorageError(f"{directory} already holds a WAL store; use FileWalStore.open")
            removed = False
            for entry in os.scandir(directory):
                if entry.name in (_TMP_SEGMENT, TRUNCATION_MARK_FILE_NAME,
                                  REMOVAL_HORIZON_FILE_NAME) or (
                    _parse_segment_name(entry.name, seg_size) is not None
                ):
                    fileops.unlink(entry.path)
                    removed = True
            if removed:
                fsync_directory(directory)
            fsync_directory(directory.parent)  # the timeline directory itself may be new
        except OSError as exc:
            raise StorageError(f"cannot create WAL store in {directory}: {exc}") from exc
        positions = FlushPositionFile.create(directory, seg_size, start_lsn)
        return cls(directory, positions, direct_io=direct_io)

    @classmethod
    def open(cls, directory: Path, seg_size: int, *, direct_io: bool = False) -> FileWalStore:
        """Open an existing store at start-up, settling it to its durable state.

        Redoes a pending truncation first, then positions write = flush = the recorded
        flush position, removes segments past it, and checks that every segment holding
        WAL below it is present and full-size. Raises ``StorageError`` if there is no store
        or ``seg_size`` differs from the one it was created with, ``CorruptionError`` if
        files fail verification or WAL below the flush position is missing.

        ``direct_io``: write WAL with ``O_DIRECT`` (no page-cache copy; see ``_direct.py``).
        Where the file system refuses it (``EINVAL``: tmpfs, some network file systems)
        the store logs a warning once and writes buffered; durability is the same.
        """
        validate_seg_size(seg_size)
        positions = FlushPositionFile.open(directory)
        if positions is None:
            raise StorageError(
                f"no WAL store in {directory} (no {FLUSH_POSITION_FILE_NAME} file); "
                "create one with FileWalStore.create"
            )
        if positions.seg_size != seg_size:
            positions.close()
            raise StorageError(
                f"WAL store in {directory} has segment size {positions.seg_size}, not {seg_size}"
            )
        store = cls(directory, positions, direct_io=direct_io)
        try:
            store._recover()
        except BaseException:
            store.close()
            raise
        return store

    def _recover(self) -> None:
        try:
            remove_durably(self._dir / _TMP_SEGMENT)
            removed_before = read_removal_horizon(self._dir)
            if removed_before is not None and removed_before > self._start_lsn:
                created_at = self._start_lsn
                self._start_lsn = removed_before
                self._unlink_segments(created_at.segment_number(self._seg_size),
                                      removed_before.segment_number(self._seg_size))
            mark = read_mark(self._dir)
            if mark is not None:
                # Bytes past the recorded flush position may not have survived the crash,
                # so the redo never truncates *up* to a position beyond it.
                self._truncate_locked(min(mark, self._flush_lsn), write_new_mark=False)
            self._settle_segments()
        except OSError as exc:
            raise StorageError(f"cannot open WAL store in {self._dir}: {exc}") from exc

    def _scan_segments(self) -> dict[int, list[bool]]:
        """segno -> list of ``is_partial`` flags of the files found for it."""
        found: dict[int, list[bool]] = {}
        for entry in os.scandir(self._dir):
            parsed = _parse_segment_name(entry.name, self._seg_size)
            if parsed is not None:
                found.setdefault(parsed[0], []).append(parsed[1])
        return found

    def _settle_segments(self) -> None:
        """Make the directory match write = flush = recorded flush position."""
        flush_segno = self._flush_lsn.segment_number(self._seg_size)
        first_segno = self._start_lsn.segment_number(self._seg_size)
        changed = False
        found = self._scan_segments()
        for segno, forms in sorted(found.items()):
            if segno > flush_segno:
                for partial in forms:
                    fileops.unlink(self._segment_path(segno, partial))
                changed = True
                continue
            if segno < first_segno:
                continue  # below our WAL: not ours to judge
            if len(forms) > 1:
                raise CorruptionError(
                    f"segment {segment_file_name(segno, self._seg_size)} exists both "
                    f"complete and .partial in {self._dir}"
                )
            path = self._segment_path(segno, forms[0])
            size = path.stat().st_size
            if size != self._seg_size:
                raise CorruptionError(f"segment {path} has {size} bytes, not {self._seg_size}")
            want_partial = segno == flush_segno
            if forms[0] != want_partial:
                # A complete segment whose rename was lost in a power cut (its bytes were
                # fdatasynced first), or a filled but never flushed one that is current.
                fileops.rename(path, self._segment_path(segno, want_partial))
                changed = True
        for segno in range(first_segno, flush_segno + 1):
            if segno not in found and self._segment_needed(segno, self._flush_lsn):
                raise CorruptionError(
                    f"segment {segment_file_name(segno, self._seg_size)} is missing in "
                    f"{self._dir} but WAL is recorded durable up to {self._flush_lsn}"
                )
        if changed:
            fsync_directory(self._dir)

    def _segment_needed(self, segno: int, end: Lsn) -> bool:
        """Whether segment ``segno`` holds any of the store's bytes below ``end``."""
        seg_start = max(int(self._start_lsn), segno * self._seg_size)
        return int(end) > seg_start

    def _segment_path(self, segno: int, partial: bool) -> Path:
        name = segment_file_name(segno, self._seg_size)
        return self._dir / (name + _PARTIAL if partial else name)

    # -- properties --------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def seg_size(self) -> int:
        return self._seg_size

    @property
    def start_lsn(self) -> Lsn:
        return self._start_lsn

    @property
    def write_lsn(self) -> Lsn:
        return self._write_lsn

    @property
    def flush_lsn(self) -> Lsn:
        return self._flush_lsn

    @property
    def truncation_pending(self) -> bool:
        """True after a truncation failed half-way: writes are refused until one succeeds."""
        return self._truncation_pending

    # -- writing -----------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageError(f"WAL store in {self._dir} is closed")

    def write(self, lsn: Lsn, data: bytes) -> None:
        """See ``WalStore.write``. A piece that fills a segment is fdatasynced and the
        segment renamed from ``.partial`` to its final name; the recorded flush position
        only moves on ``flush``."""
        self.write_chunks(lsn, (data,))

    def write_chunks(self, lsn: Lsn, chunks: Sequence[bytes]) -> None:
        """``write(lsn, b"".join(chunks))`` without joining: one ``pwritev`` per segment.

        The batched path of ``AsyncWalStore``: many small appends reach the disk in one
        system call, so the worker thread takes the GIL back once, not once per chunk.
        """
        self._check_usable()
        if self._truncation_pending:
            raise StorageError(f"refusing to write WAL at {lsn}: a truncation is pending")
        check_write_position(lsn, self._write_lsn)
        pending = [memoryview(c) for c in chunks if len(c)]
        try:
            while pending:
                pos = self._write_lsn
                segno = pos.segment_number(self._seg_size)
                offset = pos.segment_offset(self._seg_size)
                room = self._seg_size - offset
                batch: list[memoryview] = []
                n = 0
                while pending and n < room:
                    view = pending[0]
                    if n + len(view) > room:  # the rest goes to the next segment
                        batch.append(view[: room - n])
                        pending[0] = view[room - n :]
                        n = room
                    else:
                        batch.append(pending.pop(0))
                        n += len(view)
                fd = self._open_for_write(segno)
                self._write_at(fd, pos, offset, batch)
                self._unsynced = True
                self._write_lsn = pos + n
                if offset + n == self._seg_size:
                    self._complete_segment(segno)
        except OSError as exc:
            raise StorageError(
                f"cannot write WAL at {self._write_lsn} in {self._dir}: {exc}"
            ) from exc

    def _write_at(self, fd: int, pos: Lsn, offset: int, batch: list[memoryview]) -> None:
        """Write ``batch`` at ``pos`` (``offset`` in the open segment ``fd``)."""
        if not self._direct:
            pwritev_all(fd, batch, offset)
            return
        head = self._head if self._head_lsn == pos else self._read_head(offset)
        self._head_lsn = None  # unknown until the write succeeded
        try:
            new_head = write_direct(fd, offset, head, batch)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # Opened with O_DIRECT but the alignment is not enough for this file system:
            # write this and everything after buffered (rewriting is idempotent).
            self._give_up_direct_io(exc)
            assert self._fd is not None
            pwritev_all(self._fd, batch, offset)
            return
        self._head = new_head
        self._head_lsn = pos + sum(len(v) for v in batch)

    def _read_head(self, offset: int) -> bytes:
        """The open segment's bytes from ``offset`` rounded down to a block, to ``offset``
        (after open, truncation or a failed write: read through the page cache)."""
        start = offset - offset % BLOCK
        if start == offset:
            return b""
        path = self._segment_path(self._fd_segno, partial=True)
        fd = fileops.open(path, os.O_RDONLY)
        try:
            head = fileops.pread(fd, offset - start, start)
        finally:
            os.close(fd)
        if len(head) != offset - start:
            raise CorruptionError(f"short read of {path} at {start}: {len(head)} bytes")
        return head

    def _give_up_direct_io(self, exc: OSError | None) -> None:
        """Write buffered from now on; warn once per file system (``exc`` None: known)."""
        if exc is not None and refused_devices.add(os.stat(self._dir).st_dev):
            log.warning("direct I/O refused on the file system of %s (%s); writing WAL "
                        "there through the page cache", self._dir, exc)
        self._direct = False
        self._head_lsn = None
        if self._fd is not None:
            # Swap in a buffered descriptor of the same file; fdatasync works on the file,
            # so bytes written through the old one are still covered by the next sync.
            fd = fileops.open(self._segment_path(self._fd_segno, partial=True), os.O_RDWR)
            os.close(self._fd)
            self._fd = fd

    def _open_segment_fd(self, path: Path) -> int:
        if self._direct and os.stat(self._dir).st_dev in refused_devices:
            self._give_up_direct_io(None)  # another store here found out already
        if self._direct:
            try:
                return fileops.open(path, os.O_RDWR | os.O_DIRECT)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._give_up_direct_io(exc)
        return fileops.open(path, os.O_RDWR)

    def _open_for_write(self, segno: int) -> int:
        if self._fd is not None and self._fd_segno == segno:
            return self._fd
        # Moving to another segment only happens after the previous one was completed
        # (synced and closed) or after open/truncate, which leave nothing unsynced.
        assert not self._unsynced, "rule 2: unsynced bytes in a segment being left"
        self._close_fd()
        path = self._segment_path(segno, partial=True)
        try:
            fd = self._open_segment_fd(path)
        except FileNotFoundError:
            if self._segment_path(segno, partial=False).exists():
                raise StorageError(f"unexpected write into complete segment {path}") from None
            self._create_segment(segno)
            fd = self._open_segment_fd(path)
        self._fd, self._fd_segno = fd, segno
        return fd

    def _create_segment(self, segno: int) -> None:
        """Create segment ``segno`` as ``.partial``: full-size and fsynced, then renamed
        into place (and the directory fsynced), so a half-made segment is never visible."""
        tmp = self._dir / _TMP_SEGMENT
        fd = fileops.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            try:
                _preallocate(fd, self._seg_size)
                fileops.fsync(fd)
            finally:
                os.close(fd)
            fileops.rename(tmp, self._segment_path(segno, partial=True))
        except BaseException:
            # A failed preallocation may still hold blocks (ext4 keeps what it got before
            # ENOSPC): give them back, or the full disk stays full for every timeline on it.
            discard_quietly(tmp)
            raise
        fsync_directory(self._dir)

    def _complete_segment(self, segno: int) -> None:
        assert self._fd is not None, "completing a segment that is not open"
        assert self._fd_segno == segno, "completing a segment other than the open one"
        fileops.fdatasync(self._fd)
        self._unsynced = False
        self._close_fd()
        # No directory fsync: if the rename is lost, open() redoes it (the bytes are safe).
        fileops.rename(self._segment_path(segno, True), self._segment_path(segno, False))

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd, self._fd_segno = self._fd, None, -1
            os.close(fd)

    def flush(self) -> Lsn:
        """See ``WalStore.flush``: fdatasync the open segment if it has unsynced bytes,
        then durably record the new flush position before returning it."""
        self._check_usable()
        if self._truncation_pending:
            raise StorageError("refusing to flush WAL: a truncation is pending")
        if self._write_lsn == self._flush_lsn:
            return self._flush_lsn
        if self._unsynced:
            assert self._fd is not None
            try:
                fileops.fdatasync(self._fd)
            except OSError as exc:
                raise StorageError(f"cannot fdatasync WAL in {self._dir}: {exc}") from exc
            self._unsynced = False
        self._positions.record(self._write_lsn)
        self._flush_lsn = self._write_lsn
        return self._flush_lsn

    # -- truncation --------------------------------------------------------------------

    def truncate(self, lsn: Lsn) -> None:
        """See ``WalStore.truncate``.

        Procedure: durable mark ``truncate.pending``; lower the recorded flush position to
        ``min(flush_lsn, lsn)``; delete segments past ``lsn``'s; zero ``lsn``'s segment from
        its offset and fsync it; rename it back to ``.partial``; record ``lsn`` as flushed;
        remove the mark. On failure the truncation stays pending (writes refused) until a
        later ``truncate`` succeeds or ``open`` redoes it.
        """
        self._check_usable()
        check_truncate_target(lsn, self._start_lsn, self._write_lsn)
        try:
            self._truncate_locked(lsn, write_new_mark=True)
        except OSError as exc:
            raise StorageError(f"cannot truncate WAL at {lsn} in {self._dir}: {exc}") from exc

    def _truncate_locked(self, lsn: Lsn, *, write_new_mark: bool) -> None:
        if write_new_mark:
            write_mark(self._dir, lsn)
        self._truncation_pending = True
        # Nothing is lost by closing without a sync: the segment holding lsn is fsynced
        # below, and every earlier segment was fdatasynced when it was filled.
        self._unsynced = False
        self._close_fd()
        self._head_lsn = None
        lowered = min(self._flush_lsn, lsn)
        self._positions.record(lowered)
        self._flush_lsn = lowered
        self._write_lsn = lsn
        segno = lsn.segment_number(self._seg_size)
        offset = lsn.segment_offset(self._seg_size)
        found = self._scan_segments()
        for other, forms in found.items():
            if other > segno:
                for partial in forms:
                    fileops.unlink(self._segment_path(other, partial))
        fsync_directory(self._dir)
        forms = found.get(segno, [])
        if forms:
            partial = forms[0]
            path = self._segment_path(segno, partial)
            fd = fileops.open(path, os.O_RDWR)
            try:
                # Shrinking then re-growing zeroes the tail without writing it; the size
                # is back to seg_size before anyone can see it (the mark covers a crash).
                fileops.ftruncate(fd, offset)
                fileops.ftruncate(fd, self._seg_size)
                fileops.fsync(fd)
            finally:
                os.close(fd)
            if not partial:
                fileops.rename(path, self._segment_path(segno, True))
            fsync_directory(self._dir)
        elif self._segment_needed(segno, lsn):
            raise CorruptionError(
                f"segment {segment_file_name(segno, self._seg_size)} holding {lsn} is "
                f"missing in {self._dir}"
            )
        self._positions.record(lsn)
        self._flush_lsn = lsn
        clear_mark(self._dir)
        self._truncation_pending = False

    # -- removal ------------------------------------------------------------------------

    def remove_before(self, lsn: Lsn) -> int:
        """See ``WalStore.remove_before``.

        Procedure: durably record ``lsn`` as the new start (``wal_removed_before``) *first*,
        then unlink the segments below it oldest first and fsync the directory. A crash
        after the record leaves a store that opens at ``lsn`` (``open`` unlinks what is
        left below it); a crash before it leaves the old store, whole.
        """
        self._check_usable()
        check_removal_target(lsn, self._flush_lsn, self._seg_size)
        if lsn <= self._start_lsn:
            return 0
        first = self._start_lsn.segment_number(self._seg_size)
        try:
            record_removal_horizon(self._dir, lsn)
            self._start_lsn = lsn
            return self._unlink_segments(first, lsn.segment_number(self._seg_size))
        except OSError as exc:
            raise StorageError(f"cannot remove WAL below {lsn} in {self._dir}: {exc}") from exc

    def _unlink_segments(self, first: int, end: int) -> int:
        """Unlink segments ``[first, end)`` (either form), oldest first; fsync the
        directory if any went. Returns how many files were removed."""
        removed = 0
        for segno in range(first, end):
            for partial in (False, True):
                try:
                    fileops.unlink(self._segment_path(segno, partial))
                except FileNotFoundError:
                    continue
                removed += 1
        if removed:
            fsync_directory(self._dir)
        return removed

    # -- reading -----------------------------------------------------------------------

    def read(self, start: Lsn, max_bytes: int) -> bytes:
        """See ``WalStore.read``: only durable bytes, never across a segment boundary."""
        self._check_usable()
        check_readable(start, self._start_lsn, max_bytes)
        n = readable_length(start, max_bytes, self._flush_lsn, self._seg_size)
        if n == 0:
            return b""
        segno = start.segment_number(self._seg_size)
        offset = start.segment_offset(self._seg_size)
        try:
            if self._direct:
                data = self._read_direct(segno, n, offset)
            elif self._fd is not None and self._fd_segno == segno:
                data = fileops.pread(self._fd, n, offset)
            else:
                data = self._read_closed_segment(segno, n, offset)
        except OSError as exc:
            raise StorageError(f"cannot read WAL at {start} in {self._dir}: {exc}") from exc
        if self._direct and 0 < len(data) < n:
            n = len(data)  # read_direct returns less when the aligned span is too large
        if len(data) != n:
            raise CorruptionError(
                f"short read of WAL at {start} in {self._dir}: {len(data)} of {n} bytes"
            )
        return data

    def _read_direct(self, segno: int, n: int, offset: int) -> bytes:
        """Read through ``O_DIRECT`` (see ``_direct.py``); buffered from now on if the file
        system refuses it (``EINVAL`` at open or read)."""
        open_segment = self._fd is not None and self._fd_segno == segno
        try:
            if open_segment:
                assert self._fd is not None
                return read_direct(self._fd, offset, n)  # opened O_DIRECT for writing
            fd = self._open_closed_segment(segno, os.O_RDONLY | os.O_DIRECT)
            if fd is None:
                return self._read_closed_segment(segno, n, offset)  # names what is missing
            try:
                return read_direct(fd, offset, n)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._give_up_direct_io(exc)
        if open_segment:
            assert self._fd is not None
            return fileops.pread(self._fd, n, offset)
        return self._read_closed_segment(segno, n, offset)

    def _open_closed_segment(self, segno: int, flags: int) -> int | None:
        """A descriptor of segment ``segno`` (complete, else ``.partial``); None if neither."""
        for partial in (False, True):
            try:
                return fileops.open(self._segment_path(segno, partial), flags)
            except FileNotFoundError:
                continue
        return None

    def _read_closed_segment(self, segno: int, n: int, offset: int) -> bytes:
        fd = self._open_closed_segment(segno, os.O_RDONLY)
        if fd is not None:
            try:
                return fileops.pread(fd, n, offset)
            finally:
                os.close(fd)
        raise CorruptionError(
            f"segment {segment_file_name(segno, self._seg_size)} is missing in {self._dir}"
        )

    def digest(self, from_lsn: Lsn, until_lsn: Lsn) -> str:
        """See ``WalStore.digest``."""
        self._check_usable()
        check_digest_range(from_lsn, until_lsn, self._start_lsn, self._flush_lsn)
        sha = hashlib.sha256()
        pos = from_lsn
        while pos < until_lsn:
            chunk = self.read(pos, min(_DIGEST_CHUNK, int(until_lsn) - int(pos)))
            sha.update(chunk)
            pos += len(chunk)
        return sha.hexdigest()

    # -- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        """Close all files without flushing. Idempotent."""
        self._closed = True
        try:
            self._close_fd()
        finally:
            self._positions.close()

    def __enter__(self) -> FileWalStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"FileWalStore({str(self._dir)!r}, start={self._start_lsn}, "
            f"write={self._write_lsn}, flush={self._flush_lsn})"
        )
