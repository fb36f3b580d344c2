"""Where timelines keep their bytes: a directory per timeline, or memory (simulation).

A pulled timeline (``stage`` … ``commit_stage``) is built aside, in a place listing never
looks at (``<data_dir>/<tenant>/.pull-<timeline>/``), made durable there and moved into
place with one rename: a crash at any moment leaves either no timeline or the whole one.
``discard_stages`` (at start-up) removes what an interrupted pull left behind.
"""

from __future__ import annotations

import builtins
import os
import shutil
from pathlib import Path
from typing import Final, Protocol

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


_STAGE_PREFIX: Final = ".pull-"


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

    def stage(self, ttid: TenantTimelineId, seg_size: int, start_lsn: Lsn) -> WalStore:
        """Begin building ``ttid`` aside (a pull): an empty WAL store starting at
        ``start_lsn``, replacing any earlier staging of it."""
        ...

    def commit_stage(self, ttid: TenantTimelineId, store: WalStore, control_body: bytes) -> None:
        """Flush and close the staged ``store``, persist ``control_body`` beside it and move
        the timeline into place atomically and durably. ``FileExistsError`` if the
        timeline exists (the staging is then discarded)."""
        ...

    def discard_stage(self, ttid: TenantTimelineId) -> None:
        """Remove the staging of ``ttid`` (if any)."""
        ...

    def discard_stages(self) -> tuple[str, ...]:
        """Remove every staging left by an interrupted pull; return what was removed."""
        ...

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

    def _stage_dir(self, ttid: TenantTimelineId) -> Path:
        return self.data_dir / str(ttid.tenant_id) / f"{_STAGE_PREFIX}{ttid.timeline_id}"

    def stage(self, ttid: TenantTimelineId, seg_size: int, start_lsn: Lsn) -> WalStore:
        staged = self._stage_dir(ttid)
        if staged.exists():
            shutil.rmtree(staged)
        staged.mkdir(parents=True)
        return FileWalStore.create(staged, seg_size, start_lsn, direct_io=self.direct_io)

    def commit_stage(self, ttid: TenantTimelineId, store: WalStore, control_body: bytes) -> None:
        staged, final = self._stage_dir(ttid), self._dir(ttid)
        try:
            store.flush()
        finally:
            store.close()
        FileControlFileStore(staged).persist(control_body)  # fsynced, directory too
        _fsync_dir(staged)
        if final.exists():
            shutil.rmtree(staged, ignore_errors=True)
            raise FileExistsError(f"timeline directory {final} already exists")
        os.rename(staged, final)
        _fsync_dir(final.parent)

    def discard_stage(self, ttid: TenantTimelineId) -> None:
        shutil.rmtree(self._stage_dir(ttid), ignore_errors=True)

    def discard_stages(self) -> tuple[str, ...]:
        removed: builtins.list[str] = []
        if not self.data_dir.is_dir():
            return ()
        for tdir in sorted(self.data_dir.iterdir()):
            if not tdir.is_dir():
                continue
            for entry in sorted(tdir.iterdir()):
                if entry.name.startswith(_STAGE_PREFIX) and entry.is_dir():
                    shutil.rmtree(entry)
                    removed.append(str(entry))
            if removed:
                _fsync_dir(tdir)
        return tuple(removed)

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
        self._staged: dict[TenantTimelineId, MemoryWalStore] = {}

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

    def stage(self, ttid: TenantTimelineId, seg_size: int, start_lsn: Lsn) -> WalStore:
        store = MemoryWalStore(seg_size, start_lsn)
        self._staged[ttid] = store
        return store

    def commit_stage(self, ttid: TenantTimelineId, store: WalStore, control_body: bytes) -> None:
        staged = self._staged.pop(ttid)
        assert staged is store, "commit_stage of a store that was not staged"
        staged.flush()
        if ttid in self._timelines:
            raise FileExistsError(f"timeline {ttid} already exists")
        self._timelines[ttid] = (staged, self.new_control(control_body))

    def discard_stage(self, ttid: TenantTimelineId) -> None:
        self._staged.pop(ttid, None)

    def discard_stages(self) -> tuple[str, ...]:
        removed = tuple(str(t) for t in self._staged)
        self._staged.clear()
        return removed

    def crash(self) -> None:
        """Lose everything that was not flushed or persisted (a power loss)."""
        for ttid, (store, control) in list(self._timelines.items()):
            self._timelines[ttid] = (store.crash(), self.crash_control(control))
        self._staged.clear()  # a staging is never durable until committed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
