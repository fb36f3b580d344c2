"""The WAL sender: streams a timeline's WAL to a reader (reference §6, DESIGN "Consensus").

:func:`run_wal_sender` is transport-free (it sends through a callable);
:func:`serve_stream_connection` adapts a WebSocket to it and reads StatusUpdates.

Rules
-----
1. With a term, stream up to ``flush_lsn`` (uncommitted WAL included); without, up to
   ``commit_lsn``.
2. The term is checked against the *current* term before every read, under the timeline
   lock ("failed to acquire term t, current term X"), and on every wake-up while waiting
   ("term changed: requested t, now X").
3. A chunk is at most ``MAX_SEND_SIZE`` bytes and never crosses a segment; a chunk that
   is not the last one available ends on an 8 KiB page boundary (as PostgreSQL does).
4. After ``keepalive_interval`` seconds without sending anything, a Keepalive goes out
   (``reply_requested``); the sender never ends on its own when the reader is caught up.
5. WAL below the timeline's local start cannot be served; a start beyond the end waits.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Final

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ..core import (
    MAX_SEND_SIZE,
    Keepalive,
    Lsn,
    RemoteProtocolError,
    SafekeeperError,
    StatusUpdate,
    StreamSenderMessage,
    Term,
    WalData,
    decode_stream_reader_message,
    encode,
)
from ..timeline import TermMismatch, Timeline

__all__ = [
    "CLOSE_STREAM_REFUSED",
    "CLOSE_UNSUPPORTED_DATA",
    "WalSenderError",
    "pg_timestamp_us",
    "run_wal_sender",
    "serve_stream_connection",
]

log = logging.getLogger(__name__)

CLOSE_STREAM_REFUSED: Final = 4000
"""WebSocket close code for protocol-level refusals (term moved, WAL removed)."""

CLOSE_UNSUPPORTED_DATA: Final = 1003
CLOSE_IDLE: Final = 4008
_PG_EPOCH_UNIX: Final = 946_684_800  # 2000-01-01T00:00:00Z
_sender_ids = itertools.count(1)


class WalSenderError(SafekeeperError):
    """The sender must stop: the term moved or the WAL is gone. ``close_code`` says how."""

    def __init__(self, message: str, *, close_code: int = CLOSE_STREAM_REFUSED) -> None:
        super().__init__(message)
        self.close_code = close_code


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
    check_term: bool = True,
) -> None:
    """Stream WAL from ``start_lsn`` through ``send``; never returns on its own.

    Raises :class:`WalSenderError` when the term moves (rule 2) or the requested WAL was
    removed (rule 5), ``TimelineBroken`` if the timeline is deleted under it, and whatever
    ``send`` raises. ``on_sent(pos)`` is called with the new position after each chunk.
    ``check_term=False`` is the simulator's planted bug ``no_sender_term_check`` (rule 2
    skipped); production never passes it.
    """
    pos = start_lsn
    seg_size = timeline.snapshot().wal_seg_size
    last_send = trio.current_time()
    while True:
        # ---- wait for WAL past pos (rules 1, 2, 4)
        while True:
            end = timeline.flush_lsn if term is not None else timeline.commit_lsn
            if end > pos:
                break
            if check_term and term is not None and timeline.term != term:
                raise WalSenderError(f"term changed: requested {term}, now {timeline.term}")
            deadline = last_send + keepalive_interval
            if trio.current_time() >= deadline:
                await send(Keepalive(end, pg_timestamp_us(), reply_requested=True))
                last_send = trio.current_time()
                continue
            with trio.move_on_at(deadline):
                await timeline.changed.wait_changed()
        # ---- send one chunk (rules 3, 5)
        first_available = max(timeline.snapshot().local_start_lsn, timeline.store.start_lsn)
        if pos < first_available:
            raise WalSenderError(
                f"requested WAL at {pos} was removed: this node's WAL starts at "
                f"{first_available}"
            )
        n = min(MAX_SEND_SIZE, int(end) - int(pos), seg_size - pos.segment_offset(seg_size))
        if pos + n < end:
            page_aligned = int(pos + n) - (pos + n).block_offset() - int(pos)
            if page_aligned > 0:
                n = page_aligned
        try:
            data = await timeline.read_wal(pos, n, term=term if check_term else None)
        except TermMismatch as e:
            raise WalSenderError(str(e)) from e
        if not data:
            # WAL moved under us (a truncation in another term): re-evaluate the end.
            await trio.lowlevel.checkpoint()
            continue
        await send(WalData(pos, end, pg_timestamp_us(), data))
        last_send = trio.current_time()
        pos = pos + len(data)
        if on_sent is not None:
            on_sent(pos)


async def serve_stream_connection(
    ws: WebSocketConnection,
    timeline: Timeline,
    start_lsn: Lsn,
    term: Term | None,
    *,
    remote: str,
    keepalive_interval: float = 1.0,
    send_timeout: float = math.inf,
) -> None:
    """Run one accepted ``wal_stream`` WebSocket: WAL out, StatusUpdates in.

    A reader that takes nothing for ``send_timeout`` seconds (one message cannot be sent;
    a keepalive goes out every ``keepalive_interval`` even when idle, so a vanished or
    stuck reader fills the socket buffers) ends the stream with :class:`WalSenderError`
    and close code 4008.

    The connection is listed in ``timeline.walsenders[id]`` while it runs: ``remote``,
    ``start_lsn``, ``term``, ``sent_lsn`` and, once the reader reports, ``feedback`` with
    ``write_lsn``/``flush_lsn``/``apply_lsn``/``timestamp_us`` (LSNs as ``X/Y`` strings).
    ``timeline.changed`` fires when it comes, goes and reports feedback.
    Returns normally when the client went away. Raises :class:`WalSenderError`,
    :class:`RemoteProtocolError` (a malformed message from the reader) or the timeline's
    error. Does not close ``ws``.
    """
    sender_id = next(_sender_ids)
    info: dict[str, object] = {
        "remote": remote,
        "start_lsn": str(start_lsn),
        "term": term,
        "sent_lsn": str(start_lsn),
        "feedback": None,
    }
    errors: list[Exception] = []

    def sent(pos: Lsn) -> None:
        info["sent_lsn"] = str(pos)

    async def send(msg: StreamSenderMessage) -> None:
        with trio.move_on_after(send_timeout) as stuck:
            await ws.send_message(encode(msg))
        if stuck.cancelled_caught:
            raise WalSenderError(
                f"the reader took nothing for {send_timeout:g} s: closing an idle stream",
                close_code=CLOSE_IDLE,
            )

    async def stream(cancel_scope: trio.CancelScope) -> None:
        try:
            await run_wal_sender(
                timeline, start_lsn, term, send,
                keepalive_interval=keepalive_interval, on_sent=sent,
            )
        except ConnectionClosed:
            pass  # the reader left
        except Exception as e:  # re-raised by the caller, after the nursery
            errors.append(e)
        cancel_scope.cancel()

    async def read_feedback(cancel_scope: trio.CancelScope) -> None:
        while True:
            try:
                raw = await ws.get_message()
            except ConnectionClosed:
                break
            try:
                if isinstance(raw, str):
                    raise RemoteProtocolError(
                        "expected a binary message, got text", close_code=CLOSE_UNSUPPORTED_DATA
                    )
                msg: StatusUpdate = decode_stream_reader_message(raw)
            except RemoteProtocolError as e:
                errors.append(e)
                break
            info["feedback"] = {
                "write_lsn": str(msg.write_lsn),
                "flush_lsn": str(msg.flush_lsn),
                "apply_lsn": str(msg.apply_lsn),
                "timestamp_us": msg.timestamp_us,
            }
            timeline.changed.notify()
        cancel_scope.cancel()

    timeline.walsenders[sender_id] = info
    timeline.changed.notify()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream, nursery.cancel_scope)
            nursery.start_soon(read_feedback, nursery.cancel_scope)
    finally:
        del timeline.walsenders[sender_id]
        timeline.changed.notify()
    if errors:
        raise errors[0]
