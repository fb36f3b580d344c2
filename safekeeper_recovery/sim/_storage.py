"""The simulator's storage twin: memory WAL stores and control files that survive a
simulated power loss exactly as far as they were made durable."""

from __future__ import annotations

from ..storage import ControlFileStore
from ..timeline import MemoryBackend
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


class SimBackend(MemoryBackend):
    """The memory backend whose control files may lag one write behind (planted bug)."""

    def __init__(self, bugs: PlantedBugs) -> None:
        super().__init__()
        self._lazy = bugs.vote_before_durable

    def new_control(self, body: bytes) -> ControlFileStore:
        return SimControlStore(body, lazy=self._lazy)

    def crash_control(self, control: ControlFileStore) -> ControlFileStore:
        assert isinstance(control, SimControlStore)
        return control.crash()
