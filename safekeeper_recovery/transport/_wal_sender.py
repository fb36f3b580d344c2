"""``wal_stream`` over a WebSocket: the adapter of the timeline's read pipeline.

:func:`serve_stream_connection` runs :func:`~safekeeper_recovery.timeline.run_wal_sender`
(the rules of the stream live there) with a WebSocket as its ``send``, and reads the
reader's StatusUpdates. Each way a stream stops is its own type with its own close code
(``StreamStopped.close_code``): 4000 term changed, 4001 WAL removed, 4008 idle reader.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Final

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ..core import (
    Lsn,
    RemoteProtocolError,
    StatusUpdate,
    StreamSenderMessage,
    StreamStopped,
    Term,
    decode_stream_reader_message,
    encode,
)
from ..timeline import Timeline, run_wal_sender

__all__ = ["CLOSE_UNSUPPORTED_DATA", "StreamIdle", "serve_stream_connection"]

log = logging.getLogger(__name__)

CLOSE_UNSUPPORTED_DATA: Final = 1003
_sender_ids = itertools.count(1)


class StreamIdle(StreamStopped):
    """The reader took nothing for the send timeout: the stream is closed as idle."""

    close_code: int | None = 4008


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
    stuck reader fills the socket buffers) ends the stream with :class:`StreamIdle`
    (close code 4008).

    The connection is listed in ``timeline.walsenders[id]`` while it runs: ``remote``,
    ``start_lsn``, ``term``, ``sent_lsn`` and, once the reader reports, ``feedback`` with
    ``write_lsn``/``flush_lsn``/``apply_lsn``/``timestamp_us`` (LSNs as ``X/Y`` strings).
    ``timeline.changed`` fires when it comes, goes and reports feedback.
    Returns normally when the client went away. Raises ``StreamStopped`` (its subclasses),
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
            raise StreamIdle(
                f"the reader took nothing for {send_timeout:g} s: closing an idle stream"
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
