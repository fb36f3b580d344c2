"""The simulator's storage twin: memory WAL stores and control files that survive a
simulated power loss exactly as far as they were made durable (unless a planted bug says
otherwise)."""

from __future__ import annotations

import random

from ..core import Lsn, decode_state
from ..storage import ControlFileStore
from ..timeline import MemoryBackend
from ._bugs import PlantedBugs

__all__ = ["SimBackend", "SimControlStore"]

FSYNC_LIE_MAX = 64 * 1024
"""``flush_not_durable``: how much flushed WAL a crash may take at most."""


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


class SimBackend(MemoryBackend):
    """The memory backend, with the storage-side planted bugs: control files that lag one
    write behind (``vote_before_durable``) and a WAL fsync that lies (``flush_not_durable``:
    a crash also loses 1 byte to 64 KiB of flushed WAL above the persisted commit_lsn,
    drawn from ``rng``)."""

    def __init__(self, bugs: PlantedBugs, rng: random.Random) -> None:
        super().__init__()
        self._lazy = bugs.vote_before_durable
        self._fsync_lies = bugs.flush_not_durable
        self._rng = rng

    def new_control(self, body: bytes) -> ControlFileStore:
        return SimControlStore(body, lazy=self._lazy)

    def crash_control(self, control: ControlFileStore) -> ControlFileStore:
        assert isinstance(control, SimControlStore)
        return control.crash()

    def crash(self) -> None:
        super().crash()
        if not self._fsync_lies:
            return
        for store, control in self._timelines.values():
            body = control.load()
            assert body is not None
            # Never below the persisted commit_lsn: the node would then refuse to start (R8),
            # which hides the lie; above it, only the invariants can tell.
            floor = max(int(store.start_lsn), int(decode_state(body).commit_lsn))
            lost = self._rng.randrange(1, FSYNC_LIE_MAX)
            store.truncate(Lsn(max(floor, int(store.flush_lsn) - lost)))
