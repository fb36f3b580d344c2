"""The WalAcceptor: feeds a pushing connection's messages into a timeline (reference §5.5).

One code path serves proposer sockets (``wal_push``) and the in-process recovery engine:
:func:`run_wal_acceptor` works on memory channels; :func:`serve_push_connection` adapts a
WebSocket to it.

Rules
-----
1. Appends are processed without fsync (``flush=False``) and fsynced in batches: as soon as
   the queue drains, and at least every ``flush_interval`` seconds while WAL is unflushed.
   Every flush produces an AppendResponse.
2. On a clean end (the message channel closed, or the reply reader gone) unflushed WAL is
   flushed before returning ("flush on disconnect"). A cancelled acceptor does not flush.
3. A ``proposer`` receiver's handshake is recorded on the timeline: ``greeted`` *before*
   its Greeting is processed (from then on recovery is refused, so nothing recovery does
   can change the answers this proposer gets), ``voted`` with the term of its VoteRequest,
   ``streaming`` once its ProposerElected passed. A ``recovery`` receiver never counts as a
   proposer; its messages are processed with ``recovery=True`` and so end with
   ``ProposerArrived`` as soon as a proposer is connected.
4. The first processing error ends the acceptor and is raised unchanged; nothing is flushed
   or replied after it.
5. On a socket, Greeting must come first; a malformed message ends the connection with the
   codec's close code after the already-queued messages are processed.
"""

from __future__ import annotations

import logging
import math
from typing import Final

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ..core import (
    AcceptorMessage,
    AppendRequest,
    FlushWal,
    Greeting,
    ProposerElected,
    ProposerMessage,
    RemoteProtocolError,
    VoteRequest,
    decode_proposer_message,
    encode,
)
from ..timeline import Receiver, Timeline

__all__ = ["MESSAGE_QUEUE_SIZE", "REPLY_QUEUE_SIZE", "run_wal_acceptor", "serve_push_connection"]

log = logging.getLogger(__name__)

MESSAGE_QUEUE_SIZE: Final = 256
CLOSE_UNSUPPORTED_DATA: Final = 1003
CLOSE_IDLE: Final = 4008
"""Closed by the server: the client sent nothing (``wal_push``) or took nothing
(``wal_stream``) for the idle timeout."""
REPLY_QUEUE_SIZE: Final = 16
_FLUSH: Final = FlushWal()


async def run_wal_acceptor(
    timeline: Timeline,
    receiver: Receiver,
    messages: trio.MemoryReceiveChannel[ProposerMessage],
    replies: trio.MemorySendChannel[AcceptorMessage],
    *,
    flush_interval: float = 1.0,
) -> None:
    """Process ``messages`` on ``timeline`` until ``messages`` is closed; send replies.

    Returns after the final flush once ``messages`` ends, or once the reader of ``replies``
    has gone away. Raises the first processing error (``AcceptorError``, ``TimelineBroken``,
    …) as is. Closes ``replies`` on the way out in every case, so the reply reader sees the
    end. The caller registers ``receiver`` (``timeline.receiver(...)``) and runs this inside
    ``timeline.attach()``.
    """
    recovery = receiver.kind == "recovery"

    async def process(msg: ProposerMessage | FlushWal, *, flush: bool = True
                      ) -> AcceptorMessage | None:
        if recovery:
            return await timeline.process(msg, flush=flush, recovery=True)
        if isinstance(msg, Greeting):
            timeline.mark(receiver, "greeted")  # rule 3: before the Greeting is processed
        reply = await timeline.process(msg, flush=flush)
        if isinstance(msg, VoteRequest):
            timeline.mark(receiver, "voted", msg.term)
        elif isinstance(msg, ProposerElected):
            timeline.mark(receiver, "streaming", msg.term)
        return reply

    async with replies:
        dirty_since: float | None = None  # trio time of the oldest unflushed append

        async def reply(msg: AcceptorMessage | None) -> bool:
            """Send ``msg``; False when nobody reads replies any more."""
            if msg is None:
                return True
            try:
                await replies.send(msg)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
            return True

        while True:
            if dirty_since is not None:
                due = trio.current_time() - dirty_since >= flush_interval
                try:
                    msg = messages.receive_nowait() if not due else None
                except trio.WouldBlock:
                    msg = None
                except trio.EndOfChannel:
                    break
                if msg is None:  # queue drained, or the interval is up: fsync (rule 1)
                    dirty_since = None
                    if not await reply(await process(_FLUSH)):
                        return
                    continue
            else:
                try:
                    msg = await messages.receive()
                except trio.EndOfChannel:
                    break
            if isinstance(msg, AppendRequest):
                result = await process(msg, flush=False)
                if dirty_since is None:
                    dirty_since = trio.current_time()
            else:
                result = await process(msg)
            if not await reply(result):
                break
        if dirty_since is not None:  # rule 2
            await reply(await process(_FLUSH))


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
    msg_send, msg_recv = trio.open_memory_channel[ProposerMessage](MESSAGE_QUEUE_SIZE)
    reply_send, reply_recv = trio.open_memory_channel[AcceptorMessage](REPLY_QUEUE_SIZE)
    protocol_error: list[RemoteProtocolError] = []
    acceptor_error: list[Exception] = []
    writer_done = trio.Event()

    async def read_messages() -> None:
        async with msg_send:
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
                    await msg_send.send(msg)
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
                timeline, receiver, msg_recv, reply_send, flush_interval=flush_interval
            )
        except Exception as e:  # re-raised below, once the helpers are cancelled
            acceptor_error.append(e)
            nursery.cancel_scope.cancel()  # rule 4: send nothing more
        else:
            await writer_done.wait()  # deliver the final replies
            nursery.cancel_scope.cancel()  # the reader may still wait on a silent client
    if acceptor_error:
        raise acceptor_error[0]
    if protocol_error:
        raise protocol_error[0]
