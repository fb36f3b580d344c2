"""WAL consumers of one timeline: the PostgreSQL replication clients streaming from it, by
name, with the position each has made durable. Their positions hold WAL back from removal.

Rules
-----
K1  A consumer is named by its replication slot if it asked for one (``START_REPLICATION
    SLOT s``), else by its ``application_name``, else by its address: a standby that
    reconnects (to this node, after a restart of its own, after trying another node) is
    the same consumer and takes over its entry.
K2  A consumer's position is the flush position of its last standby status update; before
    the first one (or while it reports none, 0/0) the position it started streaming from.
K3  Removal hold: a connected consumer holds the WAL from its position on; a disconnected
    one goes on holding it for ``window`` seconds after its last connection ended (the
    lifecycle's peer hold window, ``--wal-peer-hold``), then it is forgotten, so a consumer
    that is gone for good cannot keep WAL forever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import final

import attrs
import trio

from ..core import Lsn

__all__ = ["Consumer", "ConsumerPositions"]


@final
@attrs.define
class Consumer:
    """One named consumer (K1); mutable while it streams."""

    name: str
    application_name: str
    slot: str | None
    remote: str
    start_lsn: Lsn
    sent_lsn: Lsn
    write_lsn: Lsn | None = None
    flush_lsn: Lsn | None = None
    apply_lsn: Lsn | None = None
    connections: int = 0
    disconnected_at: float | None = None

    @property
    def position(self) -> Lsn:
        """K2: what it made durable, else where it started."""
        if self.flush_lsn is not None and int(self.flush_lsn) != 0:
            return self.flush_lsn
        return self.start_lsn

    @property
    def connected(self) -> bool:
        return self.connections > 0

    def to_json(self) -> dict[str, object]:
        """The entry of the status JSON's ``pg_consumers`` list."""
        def opt(lsn: Lsn | None) -> str | None:
            return None if lsn is None else str(lsn)
        return {
            "name": self.name,
            "application_name": self.application_name,
            "slot": self.slot,
            "remote": self.remote,
            "connected": self.connected,
            "start_lsn": str(self.start_lsn),
            "sent_lsn": str(self.sent_lsn),
            "write_lsn": opt(self.write_lsn),
            "flush_lsn": opt(self.flush_lsn),
            "apply_lsn": opt(self.apply_lsn),
            "hold_lsn": str(self.position),
        }


class ConsumerPositions:
    """The consumers of one timeline (see the module docstring). One per timeline."""

    def __init__(self, clock: Callable[[], float] = trio.current_time) -> None:
        self._by_name: dict[str, Consumer] = {}
        self._clock = clock

    def all(self) -> list[Consumer]:
        """Every consumer known now (connected or within its hold), in arrival order."""
        return list(self._by_name.values())

    @staticmethod
    def name_for(slot: str | None, application_name: str, remote: str) -> str:
        """K1."""
        if slot:
            return f"slot:{slot}"
        if application_name:
            return f"app:{application_name}"
        return f"addr:{remote}"

    @contextmanager
    def streaming(self, *, slot: str | None, application_name: str, remote: str,
                  start_lsn: Lsn) -> Iterator[Consumer]:
        """Register a stream from ``start_lsn`` for the ``with`` block; the consumer's
        entry outlives it (K3)."""
        name = self.name_for(slot, application_name, remote)
        consumer = self._by_name.get(name)
        if consumer is None:
            consumer = Consumer(name, application_name, slot, remote, start_lsn, start_lsn)
            self._by_name[name] = consumer
        else:  # K1: the same consumer again; it restarts from where it asks now
            consumer.remote, consumer.start_lsn, consumer.sent_lsn = remote, start_lsn, start_lsn
            consumer.write_lsn = consumer.flush_lsn = consumer.apply_lsn = None
        consumer.connections += 1
        consumer.disconnected_at = None
        try:
            yield consumer
        finally:
            consumer.connections -= 1
            if consumer.connections == 0:
                consumer.disconnected_at = self._clock()

    def holds(self, now: float, window: float) -> list[Lsn]:
        """K3: the positions that hold WAL now; forgets consumers gone for ``window``."""
        for name, c in list(self._by_name.items()):
            if c.disconnected_at is not None and now - c.disconnected_at > window:
                del self._by_name[name]
        return [c.position for c in self._by_name.values()]
