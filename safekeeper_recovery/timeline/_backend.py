"""Where timelines keep their bytes: a directory per timeline, or memory (simulation)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Protocol

from ..core import CorruptionError, Lsn, TenantId, TenantTimelineId, TimelineId, decode_state
from ..storage import (
    ControlFileStore,
    FileControlFileStore,
    FileWalStore,
    MemoryControlFileStore,
    MemoryWalStore,
    WalStore,
    check_room,
)

__all__ = ["FileBackend", "MemoryBackend", "StorageBackend"]


class StorageBackend(Protocol):
    """Creates, opens, lists and deletes the durable parts of timelines (all blocking)."""

    in_thread: bool
    """Whether store calls must run in a worker thread (False only for memory twins)."""

    def list(self) -> list[TenantTimelineId]: ...

    def create(
        self, ttid: TenantTimelineId, seg_size: int, start_lsn: Lsn, control_body: bytes
    ) -> tuple[WalStore, ControlFileStore]: ...

    def open(self, ttid: TenantTimelineId) -> tuple[WalStore, ControlFileStore, bytes]: ...

    def delete(self, ttid: TenantTimelineId) -> None: ...

    def check_room(self, ttid: TenantTimelineId, nbytes: int) -> None:
        """Raise ``OSError`` unless ``nbytes`` (one segment) can be allocated for the
        timeline now, and a file opened: before a broken timeline is reloaded."""
        ...


class FileBackend:
    """``<data_dir>/<tenant_id>/<timeline_id>/`` per timeline (DESIGN.md "Storage")."""

    in_thread = True

    def __init__(self, data_dir: Path, *, direct_io: bool = False) -> None:
        self.data_dir = data_dir
        self.direct_io = direct_io
        """Open WAL stores with O_DIRECT writes (``FileWalStore.open``)."""

    def _dir(self, ttid: TenantTimelineId) -> Path:
        # Ids are validated 32-hex strings, so these joins cannot escape data_dir.
        return self.data_dir / str(ttid.tenant_id) / str(ttid.timeline_id)

    def list(self) -> list[TenantTimelineId]:
        found = []
        if not self.data_dir.is_dir():
            return []
        for tdir in sorted(self.data_dir.iterdir()):
            try:
                tenant = TenantId.parse(tdir.name)
            except ValueError:
                continue
            for ldir in sorted(tdir.iterdir()):
                try:
                    found.append(TenantTimelineId(tenant, TimelineId.parse(ldir.name)))
                except ValueError:
                    continue  # ".tmp-…" leftovers of an interrupted create, stray files
        return found

    def create(
        self, ttid: TenantTimelineId, seg_size: int, start_lsn: Lsn, control_body: bytes
    ) -> tuple[WalStore, ControlFileStore]:
        final = self._dir(ttid)
        if final.exists():
            raise FileExistsError(f"timeline directory {final} already exists")
        # Build in a temporary directory and rename: a crash mid-create leaves no half-made
        # timeline behind, only a ".tmp-" directory that listing ignores.
        tmp = final.parent / f".tmp-{ttid.timeline_id}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        try:
            store = FileWalStore.create(tmp, seg_size, start_lsn)
            store.close()
            FileControlFileStore(tmp).persist(control_body)
            os.rename(tmp, final)
        except BaseException:
            # On a full disk the half-made directory holds what little space is left.
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(final.parent)
        wal = FileWalStore.open(final, seg_size, direct_io=self.direct_io)
        return wal, FileControlFileStore(final)

    def open(self, ttid: TenantTimelineId) -> tuple[WalStore, ControlFileStore, bytes]:
        d = self._dir(ttid)
        control = FileControlFileStore(d)
        body = control.load()
        if body is None:
            raise CorruptionError(f"timeline directory {d} has no control file")
        state = decode_state(body)
        wal = FileWalStore.open(d, state.server.wal_seg_size, direct_io=self.direct_io)
        return wal, control, body

    def check_room(self, ttid: TenantTimelineId, nbytes: int) -> None:
        check_room(self._dir(ttid), nbytes)

    def delete(self, ttid: TenantTimelineId) -> None:
        d = self._dir(ttid)
        if d.exists():
            # Rename first so a crash mid-delete never leaves a half-deleted live timeline.
            doomed = d.parent / f".tmp-{ttid.timeline_id}"
            if doomed.exists():
                shutil.rmtree(doomed)
            os.rename(d, doomed)
            _fsync_dir(d.parent)
            shutil.rmtree(doomed)


class MemoryBackend:
    """In-memory twin for tests and the simulator: ``crash()`` keeps only what was made
    durable. Subclasses change how control files survive a crash through
    :meth:`new_control` and :meth:`crash_control`."""

    in_thread = False

    def __init__(self) -> None:
        self._timelines: dict[TenantTimelineId, tuple[MemoryWalStore, ControlFileStore]] = {}

    def new_control(self, body: bytes) -> ControlFileStore:
        """The control file of a new timeline, holding ``body`` durably."""
        return MemoryControlFileStore(body)

    def crash_control(self, control: ControlFileStore) -> ControlFileStore:
        """``control`` as a power loss leaves it (here: ``persist`` is durable on return)."""
        return control

    def list(self) -> list[TenantTimelineId]:
        return sorted(self._timelines)

    def create(
        self, ttid: TenantTimelineId, seg_size: int, start_lsn: Lsn, control_body: bytes
    ) -> tuple[WalStore, ControlFileStore]:
        if ttid in self._timelines:
            raise FileExistsError(f"timeline {ttid} already exists")
        # The creation itself is durable (a file backend renames the directory into place).
        control = self.new_control(control_body)
        store = MemoryWalStore(seg_size, start_lsn)
        self._timelines[ttid] = (store, control)
        return store, control

    def open(self, ttid: TenantTimelineId) -> tuple[WalStore, ControlFileStore, bytes]:
        store, control = self._timelines[ttid]
        body = control.load()
        assert body is not None
        return store, control, body

    def delete(self, ttid: TenantTimelineId) -> None:
        self._timelines.pop(ttid, None)

    def check_room(self, ttid: TenantTimelineId, nbytes: int) -> None:
        pass  # memory never runs out here

    def crash(self) -> None:
        """Lose everything that was not flushed or persisted (a power loss)."""
        for ttid, (store, control) in list(self._timelines.items()):
            self._timelines[ttid] = (store.crash(), self.crash_control(control))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
