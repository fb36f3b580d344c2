"""The write pipeline: feed one pushing connection's messages into a timeline (§5.5).

:func:`run_wal_acceptor` works on memory channels, for every writer alike: the WAL port's
``wal_push`` (``transport`` adapts a WebSocket to it) and the recovery engine's session.
The flush policy lives here and only here.

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
   or replied after it. Except the disk guard's refusal (``DiskUsageExceeded``, rule U2):
   the WAL already taken is flushed and acknowledged first, so that the proposer learns
   what is durable (its commit_lsn moves on, and with it what can be archived and
   removed to free the space), then the refusal is raised.
"""

from __future__ import annotations

from typing import Final, Protocol

import trio

from ..core import (
    AcceptorMessage,
    AppendRequest,
    DiskUsageExceeded,
    FlushWal,
    Greeting,
    ProposerElected,
    ProposerMessage,
    VoteRequest,
)
from ._timeline import Receiver, Timeline

__all__ = ["MessageSource", "run_wal_acceptor"]

_FLUSH: Final = FlushWal()


class MessageSource(Protocol):
    """Where the write pipeline takes its messages from: a trio memory receive channel, or
    a :class:`~._message_queue.MessageQueue` (bounded in bytes: what ``wal_push`` uses).
    ``receive`` raises ``trio.EndOfChannel`` at the end; ``receive_nowait`` also
    ``trio.WouldBlock`` when nothing is queued."""

    async def receive(self) -> ProposerMessage: ...

    def receive_nowait(self) -> ProposerMessage: ...


async def run_wal_acceptor(
    timeline: Timeline,
    receiver: Receiver,
    messages: MessageSource,
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
            try:
                if isinstance(msg, AppendRequest):
                    result = await process(msg, flush=False)
                    if dirty_since is None:
                        dirty_since = trio.current_time()
                else:
                    result = await process(msg)
            except DiskUsageExceeded:
                await reply(await process(_FLUSH))  # rule 4: acknowledge what is taken
                raise
            if not await reply(result):
                break
        if dirty_since is not None:  # rule 2
            await reply(await process(_FLUSH))
