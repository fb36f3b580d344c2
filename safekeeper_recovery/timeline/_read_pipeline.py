"""The read pipeline: stream a timeline's WAL to one reader (reference §6).

:func:`run_wal_sender` knows nothing of sockets: it sends through a callable; the WAL port
(``transport``) and the in-process donor adapt it.

Rules
-----
1. With a term, stream up to ``flush_lsn`` (uncommitted WAL included); without, up to
   ``commit_lsn``.
2. The term is checked against the *current* term before every read, under the timeline
   lock ("failed to acquire term t, current term X"), and on every wake-up while waiting
   ("term changed: requested t, now X"): both end the stream with ``StreamTermChanged``.
3. A chunk is at most ``max_chunk`` bytes (``MAX_SEND_SIZE`` unless the caller splits
   chunks into smaller messages itself) and never crosses a segment; a chunk that
   is not the last one available ends on an 8 KiB page boundary (as PostgreSQL does).
4. After ``keepalive_interval`` seconds without sending anything, a Keepalive goes out
   (``reply_requested``); the sender never ends on its own when the reader is caught up.
5. WAL below the timeline's local start cannot be served from disk. With an archive, the
   part at or past the timeline's start is served from it instead (rules W1-W4 of
   ``_archived_wal.py``: verified, whole segments; a missing or corrupt object ends the
   stream with ``ArchivedWalUnreadable``, close code 4011), with the same term checks,
   chunking and messages as WAL from disk, and the stream goes on from disk where the
   local WAL begins. Without an archive it ends with ``WalRemoved``. A start beyond the
   end waits.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from ..core import (
    MAX_SEND_SIZE,
    Keepalive,
    Lsn,
    StreamSenderMessage,
    StreamTermChanged,
    Term,
    WalData,
    WalRemoved,
)
from ..storage import Archive
from ._archived_wal import ArchivedWalReader
from ._timeline import TermMismatch, Timeline

__all__ = ["pg_timestamp_us", "run_wal_sender"]

_PG_EPOCH_UNIX: Final = 946_684_800  # 2000-01-01T00:00:00Z


def pg_timestamp_us() -> int:
    """Wall-clock microseconds since 2000-01-01 (PostgreSQL's epoch), for message stamps."""
    return int((time.time() - _PG_EPOCH_UNIX) * 1_000_000)


async def run_wal_sender(
    timeline: Timeline,
    start_lsn: Lsn,
    term: Term | None,
    send: Callable[[StreamSenderMessage], Awaitable[None]],
    *,
    keepalive_interval: float = 1.0,
    on_sent: Callable[[Lsn], None] | None = None,
    archive: Archive | None = None,
    max_chunk: int = MAX_SEND_SIZE,
) -> None:
    """Stream WAL from ``start_lsn`` through ``send``; never returns on its own.

    Raises ``StreamTermChanged`` when the term moves (rule 2), ``WalRemoved`` when the
    requested WAL was removed (rule 5), ``TimelineBroken`` if the timeline is deleted under
    it, and whatever ``send`` raises. ``on_sent(pos)`` is called with the new position after
    each chunk. With ``archive``, removed WAL is served from it (rule 5) and a missing or
    corrupt archived segment raises ``ArchivedWalUnreadable``.
    """
    pos = start_lsn
    seg_size = timeline.snapshot().wal_seg_size
    archived = (ArchivedWalReader(archive, timeline.ttid, seg_size)
                if archive is not None else None)
    last_send = trio.current_time()
    while True:
        # ---- wait for WAL past pos (rules 1, 2, 4)
        while True:
            end = timeline.flush_lsn if term is not None else timeline.commit_lsn
            if end > pos:
                break
            if term is not None and timeline.term != term:
                raise StreamTermChanged(
                    f"term changed: requested {term}, now {timeline.term}")
            deadline = last_send + keepalive_interval
            if trio.current_time() >= deadline:
                await send(Keepalive(end, pg_timestamp_us(), reply_requested=True))
                last_send = trio.current_time()
                continue
            with trio.move_on_at(deadline):
                await timeline.changed.wait_changed()
        # ---- send one chunk (rules 3, 5)
        snap = timeline.snapshot()
        first_available = max(snap.local_start_lsn, timeline.store.start_lsn)
        from_archive = pos < first_available
        if from_archive and (archived is None or pos < snap.timeline_start_lsn):
            raise WalRemoved(
                f"requested WAL at {pos} was removed: this node's WAL starts at "
                f"{first_available}" + ("" if archived is None else
                                        f" and the timeline at {snap.timeline_start_lsn}")
            )
        n = min(max_chunk, int(end) - int(pos), seg_size - pos.segment_offset(seg_size))
        if pos + n < end:
            page_aligned = int(pos + n) - (pos + n).block_offset() - int(pos)
            if page_aligned > 0:
                n = page_aligned
        if from_archive and archived is not None:
            data = await archived.read(pos, n)
            if term is not None and timeline.term != term:  # rule 2, as for a disk read
                raise StreamTermChanged(
                    f"term changed: requested {term}, now {timeline.term}")
        else:
            try:
                data = await timeline.read_wal(pos, n, term=term)
            except TermMismatch as e:
                raise StreamTermChanged(str(e)) from e
            except WalRemoved:
                if archived is None:
                    raise
                continue  # removed since we looked: the next round reads the archive
        if not data:
            # WAL moved under us (a truncation in another term): re-evaluate the end.
            await trio.lowlevel.checkpoint()
            continue
        await send(WalData(pos, end, pg_timestamp_us(), data))
        last_send = trio.current_time()
        pos = pos + len(data)
        if on_sent is not None:
            on_sent(pos)
