"""Both ends of a timeline snapshot (a pull), over any byte stream.

:func:`snapshot_frames` is the donor's side: it holds removal (:meth:`Timeline.hold_removal`)
for as long as the stream runs, sends the header (B3), the WAL from the store's start to the
flush position of the same instant, each read under the snapshot's term (a read in another
term ends the stream with a ``term`` abort), and the end frame only after checking once more
that the term has not moved (B5).

:func:`receive_snapshot` is the receiver's: it decodes and checks every frame
(``SnapshotDecoder``), writes the WAL into a staged timeline and installs it only when the
end frame arrived and every check passed (``_staging.py``, I1-I4); on any failure, or a
cancellation, the staging is discarded.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Callable
from typing import Final

import attrs
import trio

from ..core import (
    INVALID_LSN,
    Lsn,
    PersistentState,
    SafekeeperError,
    ServerInfo,
    SnapshotDecoder,
    SnapshotHeader,
    SnapshotInvalid,
    SnapshotWal,
    TenantTimelineId,
    Term,
    decode_state,
    encode_abort,
    encode_end,
    encode_header,
    encode_state,
    encode_wal,
)
from ._registry import TimelineRegistry
from ._staging import StagedTimeline
from ._timeline import TermMismatch, Timeline, TimelineSnapshot

__all__ = ["SNAPSHOT_CHUNK", "receive_snapshot", "snapshot_frames", "snapshot_state"]

SNAPSHOT_CHUNK: Final = 1 << 20
"""WAL bytes per frame (reads never cross a segment, so a frame may be shorter)."""
WRITE_QUEUE: Final = 16
"""Frames (MiB) received ahead of the receiver's disk writes."""


def snapshot_state(snap: TimelineSnapshot, start: Lsn) -> PersistentState:
    """The control state a receiver installs for WAL ``[start, snap.flush_lsn)``: the
    donor's term and history, its horizons, and ``local_start_lsn`` = where its WAL
    begins."""
    return PersistentState(
        tenant_id=snap.ttid.tenant_id,
        timeline_id=snap.ttid.timeline_id,
        term=snap.term,
        term_history=snap.term_history,
        server=ServerInfo(snap.pg_version, snap.system_id, snap.wal_seg_size),
        timeline_start_lsn=snap.timeline_start_lsn,
        local_start_lsn=start,
        commit_lsn=min(snap.commit_lsn, snap.flush_lsn),
        backup_lsn=snap.backup_lsn,
        peer_horizon_lsn=snap.peer_horizon_lsn,
        remote_consistent_lsn=snap.remote_consistent_lsn,
    )


async def snapshot_frames(
    timeline: Timeline, *, on_sent: Callable[[int], None] | None = None
) -> AsyncGenerator[bytes, None]:
    """The donor's snapshot of ``timeline`` as frames (module docstring). Removal is held
    until the generator is closed. ``on_sent(n)`` is told of the WAL bytes of each frame.
    Raises ``TimelineBroken`` (before the first frame) if the timeline is deleted."""
    async with timeline.hold_removal() as (snap, start):
        end = snap.flush_lsn
        term = snap.term
        header = SnapshotHeader(snap.node_id, term, start, end,
                                encode_state(snapshot_state(snap, start)))
        yield encode_header(header)
        pos = start
        while pos < end:
            try:
                data = await timeline.read_wal(pos, min(SNAPSHOT_CHUNK, int(end) - int(pos)),
                                               term=term)
            except TermMismatch as e:
                yield encode_abort("term", str(e))
                return
            except SafekeeperError as e:
                yield encode_abort("error", f"{type(e).__name__}: {e}")
                return
            if not data:  # end was durable when the snapshot began; only a bug gets here
                yield encode_abort("error", f"no WAL at {pos} below the snapshot's end {end}")
                return
            yield encode_wal(pos, data)
            if on_sent is not None:
                on_sent(len(data))
            pos = Lsn(int(pos) + len(data))
        if timeline.term != term:  # B5: checked after the last WAL frame
            yield encode_abort("term", f"term {term} became {timeline.term}")
            return
        yield encode_end(term, end)


async def receive_snapshot(
    registry: TimelineRegistry,
    ttid: TenantTimelineId,
    stream: AsyncIterable[bytes],
    *,
    on_header: Callable[[SnapshotHeader], None] | None = None,
    on_wal: Callable[[int], None] | None = None,
    min_term: Term = 0,
) -> Timeline:
    """Decode ``stream`` (a donor's :func:`snapshot_frames`), stage and install ``ttid``;
    return the installed timeline. ``on_header`` hears of the header once it is checked,
    ``on_wal(n)`` of every WAL frame written. ``min_term``: the installed timeline's term
    is at least this (the highest term the peers reported: a vote the lost disk held may
    live on in another peer's term, and the node must not vote below it again). Raises
    ``SnapshotInvalid`` (a bad frame, a truncated stream, a state that does not fit),
    ``PullTermChanged`` (redo the pull), ``TimelineConflict`` (the timeline exists here)
    or ``StorageError``; nothing is installed then."""
    decoder = SnapshotDecoder()
    staged: StagedTimeline | None = None
    state: PersistentState | None = None
    # The network is read while the disk is written: frames queue up to WRITE_QUEUE
    # deep, and the writer takes whatever has queued in one worker-thread hop.
    send, receive = trio.open_memory_channel[SnapshotWal](WRITE_QUEUE)

    async def write_frames() -> None:
        async with receive:
            async for frame in receive:
                batch = [frame]
                while True:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                assert staged is not None, "WAL frames are sent only after the header"
                await staged.write_many([(f.lsn, f.data) for f in batch])
                if on_wal is not None:
                    on_wal(sum(len(f.data) for f in batch))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_frames)
            async with send:
                async for chunk in stream:
                    for frame in decoder.feed(chunk):
                        if isinstance(frame, SnapshotHeader):
                            state = _decode_header_state(frame)
                            staged = await registry.stage(ttid, state.server.wal_seg_size,
                                                          frame.start_lsn)
                            if on_header is not None:
                                on_header(frame)
                        elif isinstance(frame, SnapshotWal):
                            await send.send(frame)
        header = decoder.finish()
        assert staged is not None, "finish() passed without a header"
        assert state is not None, "finish() passed without a header"
        if state.term < min_term:
            state = attrs.evolve(state, term=min_term)
        timeline = await staged.install(state, header.end_lsn)
        staged = None
        return timeline
    except BaseExceptionGroup as group:  # one failure: the writer's or the reader's
        error = group.exceptions[0] if len(group.exceptions) == 1 else group
        raise error from None
    finally:
        if staged is not None:
            await staged.discard()


def _decode_header_state(header: SnapshotHeader) -> PersistentState:
    try:
        state = decode_state(header.state_body)
    except SafekeeperError as e:
        raise SnapshotInvalid(f"snapshot's control state is not valid: {e}") from None
    if state.term != header.term:
        raise SnapshotInvalid(f"snapshot's control state has term {state.term}, its header "
                              f"{header.term}")
    if state.local_start_lsn != header.start_lsn and state.local_start_lsn != INVALID_LSN:
        raise SnapshotInvalid(f"snapshot's control state starts at {state.local_start_lsn}, "
                              f"its header at {header.start_lsn}")
    return state
