"""The simulator's storage twin: memory WAL stores and control files that survive a
simulated power loss exactly as far as they were made durable."""

from __future__ import annotations

from ..core import Lsn, TenantTimelineId
from ..storage import ControlFileStore, MemoryWalStore, WalStore
from ._bugs import PlantedBugs

__all__ = ["SimBackend", "SimControlStore"]


class SimControlStore:
    """A control file. ``persist`` is durable on return, unless the planted bug
    ``vote_before_durable`` makes durability lag one write behind."""

    def __init__(self, body: bytes, *, lazy: bool) -> None:
        self._body = body
        self._durable = body
        self._lazy = lazy

    def load(self) -> bytes | None:
        return self._body

    def persist(self, body: bytes) -> None:
        if self._lazy:
            self._durable = self._body  # the previous write reaches the disk only now
        else:
            self._durable = bytes(body)
        self._body = bytes(body)

    def crash(self) -> SimControlStore:
        return SimControlStore(self._durable, lazy=self._lazy)


class SimBackend:
    """A ``StorageBackend`` in memory; :meth:`crash` keeps only durable state."""

    in_thread = False

    def __init__(self, bugs: PlantedBugs) -> None:
        self._lazy = bugs.vote_before_durable
        self._timelines: dict[TenantTimelineId, tuple[MemoryWalStore, SimControlStore]] = {}

    def list(self) -> list[TenantTimelineId]:
        return sorted(self._timelines)

    def create(
        self, ttid: TenantTimelineId, seg_size: int, start_lsn: Lsn, control_body: bytes
    ) -> tuple[WalStore, ControlFileStore]:
        if ttid in self._timelines:
            raise FileExistsError(f"timeline {ttid} already exists")
        store = MemoryWalStore(seg_size, start_lsn)
        # The creation itself is durable (the directory is renamed into place).
        control = SimControlStore(control_body, lazy=self._lazy)
        self._timelines[ttid] = (store, control)
        return store, control

    def open(self, ttid: TenantTimelineId) -> tuple[WalStore, ControlFileStore, bytes]:
        store, control = self._timelines[ttid]
        body = control.load()
        assert body is not None
        return store, control, body

    def delete(self, ttid: TenantTimelineId) -> None:
        self._timelines.pop(ttid, None)

    def crash(self) -> None:
        """Lose everything not flushed or persisted (a power loss)."""
        for ttid, (store, control) in list(self._timelines.items()):
            self._timelines[ttid] = (store.crash(), control.crash())
