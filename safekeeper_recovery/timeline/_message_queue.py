"""A queue of proposer messages bounded in bytes: what a pushing connection may hold in
memory ahead of the write pipeline.

Why bytes and not messages: a message is anything from a 40-byte keepalive to a 1 MiB
append (``MAX_SEND_SIZE``), so a bound in messages is either far too loose for large
appends (256 of them once allowed 256 MiB per connection) or throttles a proposer that
sends small ones. Each queued message costs its WAL bytes plus ``MESSAGE_COST`` (the Python
objects around them), so many tiny messages are bounded too.

Rules
-----
Q1  ``send`` waits while the queued cost plus the message's would exceed ``max_bytes``,
    except that an empty queue always takes one message (a single message larger than the
    bound still passes, alone).
Q2  Messages come out in order; ``receive`` and ``receive_nowait`` behave like a trio
    memory channel's (``EndOfChannel`` once the sender closed and the queue is empty,
    ``WouldBlock`` when empty).
"""

from __future__ import annotations

from types import TracebackType
from typing import Final

import trio

from ..core import AppendRequest, ProposerMessage

__all__ = ["MESSAGE_COST", "PUSH_QUEUE_BYTES", "MessageQueue", "message_cost"]

PUSH_QUEUE_BYTES: Final = 16 * 1024 * 1024
"""Per ``wal_push`` connection: twice a proposer's default send window (8 MiB), so a
well-behaved proposer never waits on it, while a client that floods appends holds at most
this much memory on the node."""
MESSAGE_COST: Final = 4096
"""What a queued message costs besides its WAL bytes."""


def message_cost(msg: ProposerMessage) -> int:
    """Bytes a queued ``msg`` counts for (Q1)."""
    return MESSAGE_COST + (len(msg.data) if isinstance(msg, AppendRequest) else 0)


class MessageQueue:
    """A single-producer, single-consumer queue of :class:`ProposerMessage` bounded by
    ``max_bytes`` (rules Q1, Q2). The producer closes it with :meth:`aclose` (or ``async
    with``); the consumer reads with :meth:`receive` / :meth:`receive_nowait`."""

    def __init__(self, max_bytes: int = PUSH_QUEUE_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        # The memory channel orders and wakes; the byte count bounds it (its own buffer
        # is unbounded, never the limit).
        self._send, self._recv = trio.open_memory_channel[tuple[ProposerMessage, int]](
            float("inf")
        )
        self._space = trio.Event()
        self._consumer_gone = False

    async def send(self, msg: ProposerMessage) -> None:
        """Queue ``msg``, first waiting for room (Q1). ``trio.ClosedResourceError`` after
        :meth:`aclose`; ``trio.BrokenResourceError`` once the consumer closed its end."""
        cost = message_cost(msg)
        while self.queued_bytes and self.queued_bytes + cost > self.max_bytes:
            if self._consumer_gone:
                raise trio.BrokenResourceError("the message queue's consumer is gone")
            await self._space.wait()
        self.queued_bytes += cost
        self._send.send_nowait((msg, cost))

    async def aclose(self) -> None:
        await self._send.aclose()

    async def __aenter__(self) -> MessageQueue:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _taken(self, item: tuple[ProposerMessage, int]) -> ProposerMessage:
        msg, cost = item
        self.queued_bytes -= cost
        self._space.set()
        self._space = trio.Event()
        return msg

    async def receive(self) -> ProposerMessage:
        return self._taken(await self._recv.receive())

    def receive_nowait(self) -> ProposerMessage:
        return self._taken(self._recv.receive_nowait())

    def close_receiving(self) -> None:
        """The consumer is gone: a waiting or later :meth:`send` fails."""
        self._consumer_gone = True
        self._recv.close()
        self._space.set()
