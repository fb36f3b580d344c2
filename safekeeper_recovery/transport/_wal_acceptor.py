"""``wal_push`` over a WebSocket: the adapter of the timeline's write pipeline.

:func:`serve_push_connection` reads a WebSocket into the memory channel that
:func:`~safekeeper_recovery.timeline.run_wal_acceptor` consumes (the processing and flush
rules live there) and writes its replies back. On a socket, Greeting must come first; a
malformed message ends the connection with the codec's close code after the
already-queued messages are processed.
"""

from __future__ import annotations

import logging
import math
from typing import Final

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ..core import (
    AcceptorMessage,
    DiskUsageExceeded,
    Greeting,
    RemoteProtocolError,
    decode_proposer_message,
    encode,
)
from ..timeline import MessageQueue, Receiver, Timeline, run_wal_acceptor

__all__ = ["REPLY_QUEUE_SIZE", "serve_push_connection"]

log = logging.getLogger(__name__)

CLOSE_UNSUPPORTED_DATA: Final = 1003
CLOSE_IDLE: Final = 4008
"""Closed by the server: the client sent nothing (``wal_push``) or took nothing
(``wal_stream``) for the idle timeout."""
REPLY_QUEUE_SIZE: Final = 16
REFUSAL_REPLY_TIMEOUT: Final = 5.0
"""How long the replies queued before a disk-guard refusal may take to go out."""


async def serve_push_connection(
    ws: WebSocketConnection,
    timeline: Timeline,
    receiver: Receiver,
    *,
    flush_interval: float = 1.0,
    idle_timeout: float = math.inf,
) -> None:
    """Run one accepted ``wal_push`` WebSocket through :func:`run_wal_acceptor`.

    Returns normally when the client went away (after flushing). Raises the processing
    error, or a :class:`RemoteProtocolError` for a malformed / out-of-order message or a
    client silent for ``idle_timeout`` seconds (close code :data:`CLOSE_IDLE`; proposers
    send a keepalive append every second when they have nothing else to say, so only a
    vanished or stuck client is that quiet). Does not close ``ws``: the caller maps the
    outcome to a close code.
    """
    # The queue's bound (bytes, not messages) is the write pipeline's: timeline.MessageQueue.
    queue = MessageQueue()
    reply_send, reply_recv = trio.open_memory_channel[AcceptorMessage](REPLY_QUEUE_SIZE)
    protocol_error: list[RemoteProtocolError] = []
    acceptor_error: list[Exception] = []
    writer_done = trio.Event()

    async def read_messages() -> None:
        async with queue:
            first = True
            while True:
                try:
                    with trio.move_on_after(idle_timeout) as idle:
                        raw = await ws.get_message()
                except ConnectionClosed:
                    return  # the client left (or sent an oversized frame: closed with 1009)
                if idle.cancelled_caught:
                    protocol_error.append(RemoteProtocolError(
                        f"no message for {idle_timeout:g} s: closing an idle connection",
                        close_code=CLOSE_IDLE,
                    ))
                    return
                try:
                    if isinstance(raw, str):
                        raise RemoteProtocolError(
                            "expected a binary message, got text",
                            close_code=CLOSE_UNSUPPORTED_DATA,
                        )
                    msg = decode_proposer_message(raw)
                    if first and not isinstance(msg, Greeting):
                        raise RemoteProtocolError(
                            f"expected Greeting as the first message, got {type(msg).__name__}"
                        )
                except RemoteProtocolError as e:
                    protocol_error.append(e)
                    return
                first = False
                try:
                    await queue.send(msg)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

    async def write_replies() -> None:
        try:
            async with reply_recv:
                async for msg in reply_recv:
                    await ws.send_message(encode(msg))
        except ConnectionClosed:
            pass  # the client left; closing reply_recv tells the acceptor
        finally:
            writer_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_messages)
        nursery.start_soon(write_replies)
        try:
            await run_wal_acceptor(
                timeline, receiver, queue, reply_send, flush_interval=flush_interval
            )
        except Exception as e:  # re-raised below, once the helpers are cancelled
            acceptor_error.append(e)
            if isinstance(e, DiskUsageExceeded):
                # Its last reply acknowledges the WAL taken before the refusal: deliver it.
                with trio.move_on_after(REFUSAL_REPLY_TIMEOUT):
                    await writer_done.wait()
            nursery.cancel_scope.cancel()  # rule 4: send nothing more
        else:
            await writer_done.wait()  # deliver the final replies
            nursery.cancel_scope.cancel()  # the reader may still wait on a silent client
    if acceptor_error:
        raise acceptor_error[0]
    if protocol_error:
        raise protocol_error[0]
