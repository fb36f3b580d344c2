"""An in-process :class:`DonorConnector`: donors are :class:`Timeline` objects of this
process. The same WAL sender code as the network path streams into a memory channel.

Used by unit tests and the deterministic simulator; a library user can use it to recover
between timelines that live in one process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio

from ..core import (
    DonorStatus,
    DonorUnavailable,
    Keepalive,
    Lsn,
    NodeId,
    PeerInfo,
    StatusUpdate,
    StreamStopped,
    StreamTermChanged,
    TenantTimelineId,
    Term,
    TermChanged,
    WalData,
)
from ._read_pipeline import run_wal_sender
from ._timeline import Timeline, TimelineBroken

__all__ = ["InProcessDonorConnector", "InProcessStream"]

TimelineLookup = Callable[[NodeId, TenantTimelineId], Timeline | None]


class InProcessStream:
    def __init__(self, messages: trio.MemoryReceiveChannel[WalData | Keepalive | Exception]):
        self._messages = messages
        self.status_updates: list[StatusUpdate] = []

    async def receive(self) -> WalData | Keepalive:
        try:
            msg = await self._messages.receive()
        except trio.EndOfChannel:
            raise DonorUnavailable("donor ended the stream") from None
        if isinstance(msg, Exception):
            raise msg
        return msg

    async def send_status(self, update: StatusUpdate) -> None:
        self.status_updates.append(update)


class InProcessDonorConnector:
    """Reach donors through ``lookup(node_id, ttid)`` (``None`` = unreachable)."""

    def __init__(self, lookup: TimelineLookup, *, keepalive_interval: float = 1.0) -> None:
        self.lookup = lookup
        self.keepalive_interval = keepalive_interval

    def _timeline(self, donor: PeerInfo, ttid: TenantTimelineId) -> Timeline:
        timeline = self.lookup(donor.node_id, ttid)
        if timeline is None or timeline.deleted:
            raise DonorUnavailable(f"donor {donor.node_id} is unreachable")
        return timeline

    async def fetch_status(self, donor: PeerInfo, ttid: TenantTimelineId) -> DonorStatus:
        await trio.lowlevel.checkpoint()
        snap = self._timeline(donor, ttid).snapshot()
        return DonorStatus(snap.term, snap.term_history)

    def open_stream(
        self, donor: PeerInfo, ttid: TenantTimelineId, start_lsn: Lsn, term: Term
    ) -> AbstractAsyncContextManager[InProcessStream]:
        return self._open(donor, ttid, start_lsn, term)

    @asynccontextmanager
    async def _open(
        self, donor: PeerInfo, ttid: TenantTimelineId, start_lsn: Lsn, term: Term
    ) -> AsyncIterator[InProcessStream]:
        timeline = self._timeline(donor, ttid)
        send, receive = trio.open_memory_channel[WalData | Keepalive | Exception](16)

        # The sender runs under its own scope: cancelling the nursery's scope from the
        # ``finally`` below would swallow the body's exception (the yield is inside it).
        sender_scope = trio.CancelScope()

        async def sender() -> None:
            with sender_scope:
                async with send:
                    try:
                        await run_wal_sender(
                            timeline, start_lsn, term, send.send,
                            keepalive_interval=self.keepalive_interval,
                        )
                    except StreamTermChanged as e:
                        await send.send(TermChanged(f"donor ended the stream: {e}"))
                    except StreamStopped as e:
                        await send.send(DonorUnavailable(f"donor ended the stream: {e}"))
                    except TimelineBroken as e:
                        await send.send(DonorUnavailable(f"donor ended the stream: {e}"))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # the reader went away: the stream is over

        try:
            async with trio.open_nursery() as nursery, receive:
                nursery.start_soon(sender)
                try:
                    yield InProcessStream(receive)
                finally:
                    sender_scope.cancel()
        except BaseExceptionGroup as group:
            # The sender never raises: a group here wraps the body's own exception.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
