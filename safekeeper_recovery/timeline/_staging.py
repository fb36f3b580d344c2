"""A pulled timeline under construction: written aside, installed in one step.

Rules (the receiver's half of a pull; the wire format's rules B1-B5 are in ``core/_pull.py``):

I1  Nothing of a staged timeline is visible before :meth:`StagedTimeline.install`: it
    lives where the registry never lists (``StorageBackend.stage``), and a node that
    starts finds and discards such leftovers before it loads anything.
I2  WAL is written strictly in order from the snapshot's start; install checks that the
    store holds exactly ``[start_lsn, end_lsn)`` and that the control state names this
    timeline, has the store's segment size and positions within the WAL it holds.
I3  Install makes everything durable (WAL fdatasynced, control file fsynced, directory
    fsynced) before the rename that makes the timeline exist; then the registry loads it
    from disk like any timeline at start-up and starts its services (peer recovery
    catches up what the donor received meanwhile).
I4  A timeline that appeared meanwhile (created, or installed by someone else) is never
    overwritten: install raises ``TimelineConflict`` and discards the staging.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..core import Lsn, PersistentState, SnapshotInvalid, TenantTimelineId, encode_state
from ..storage import WalStore

if TYPE_CHECKING:
    from ._registry import TimelineRegistry
    from ._timeline import Timeline

__all__ = ["StagedTimeline"]


class StagedTimeline:
    """Made by :meth:`TimelineRegistry.stage`; either :meth:`install` or :meth:`discard`
    it (``async with`` discards it unless it was installed)."""

    def __init__(
        self, registry: TimelineRegistry, ttid: TenantTimelineId, store: WalStore,
        start_lsn: Lsn,
    ) -> None:
        self._registry = registry
        self.ttid = ttid
        self._store: WalStore | None = store
        self.start_lsn = start_lsn
        self.next_lsn = start_lsn

    async def write(self, lsn: Lsn, data: bytes) -> None:
        """Append ``data`` at ``lsn`` (rule I2: must be where the last write ended)."""
        await self.write_many([(lsn, data)])

    async def write_many(self, pieces: Sequence[tuple[Lsn, bytes]]) -> None:
        """Append contiguous ``(lsn, data)`` pieces in one worker-thread hop (I2)."""
        store = self._live()
        if not pieces:
            return
        pos = int(self.next_lsn)
        for lsn, data in pieces:
            if lsn != pos:
                raise SnapshotInvalid(f"staged WAL written at {lsn}, expected {Lsn(pos)}")
            pos += len(data)

        write_chunks = getattr(store, "write_chunks", None)  # FileWalStore: one pwritev

        def write() -> None:
            if write_chunks is not None:  # as AsyncWalStore does: few large direct writes
                write_chunks(pieces[0][0], [data for _, data in pieces])
                return
            for lsn, data in pieces:
                store.write(lsn, data)

        await self._registry._blocking(write)
        self.next_lsn = Lsn(pos)

    async def install(self, state: PersistentState, end_lsn: Lsn) -> Timeline:
        """Check (I2), make durable and move into place (I3), then load and start the
        timeline; returns it. ``SnapshotInvalid`` if a check fails, ``TimelineConflict``
        if the timeline exists (I4). Either way the staging is gone afterwards."""
        store = self._live()
        try:
            _check_state(self.ttid, state, store.seg_size, self.start_lsn, end_lsn)
            if self.next_lsn != end_lsn:
                raise SnapshotInvalid(
                    f"staged WAL of {self.ttid} ends at {self.next_lsn}, not {end_lsn}")
        except BaseException:
            await self.discard()
            raise
        self._store = None
        return await self._registry._install(self.ttid, store, encode_state(state))

    async def discard(self) -> None:
        """Drop the staging (idempotent)."""
        store, self._store = self._store, None
        if store is not None:
            await self._registry._discard_stage(self.ttid, store)

    def _live(self) -> WalStore:
        if self._store is None:
            raise SnapshotInvalid(f"staging of {self.ttid} is already installed or discarded")
        return self._store

    async def __aenter__(self) -> StagedTimeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.discard()


def _check_state(
    ttid: TenantTimelineId, state: PersistentState, seg_size: int, start: Lsn, end: Lsn
) -> None:
    if (state.tenant_id, state.timeline_id) != (ttid.tenant_id, ttid.timeline_id):
        raise SnapshotInvalid(
            f"snapshot's control state names {state.tenant_id}/{state.timeline_id}, "
            f"not {ttid}")
    if state.server.wal_seg_size != seg_size:
        raise SnapshotInvalid(f"snapshot's segment size {state.server.wal_seg_size} is not "
                              f"the staged store's {seg_size}")
    if start < state.timeline_start_lsn:
        raise SnapshotInvalid(f"snapshot starts at {start}, below the timeline's start "
                              f"{state.timeline_start_lsn}")
    if not state.commit_lsn <= end:
        raise SnapshotInvalid(f"snapshot's commit_lsn {state.commit_lsn} is past its WAL "
                              f"end {end}")
    if state.term_history.entries and state.term_history.entries[-1].term > state.term:
        raise SnapshotInvalid("snapshot's term history runs past its term")
