"""A timeline of this process as the recovery engine's target (``recovery.RecoveryTarget``).

It implements the engine's Protocols structurally (this layer does not import the engine):
the session's messages go through :meth:`Timeline.process` with ``recovery=True``, so the
timeline itself makes recovery yield to a connected proposer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio

from ..core import (
    AcceptorMessage,
    AppendRequest,
    LocalView,
    NodeId,
    ProposerElected,
    TenantTimelineId,
    Term,
    VoteRequest,
    VoteResponse,
)
from ._timeline import Receiver, Timeline
from ._write_pipeline import run_wal_acceptor

__all__ = ["LocalSession", "LocalTarget"]


class LocalSession:
    """One recovery attempt's channel into the timeline's acceptor."""

    def __init__(self, timeline: Timeline, receiver: Receiver) -> None:
        self._timeline = timeline
        self._receiver = receiver

    async def vote(self, term: Term) -> VoteResponse:
        reply = await self._timeline.process(VoteRequest(term), recovery=True)
        assert isinstance(reply, VoteResponse), reply
        return reply

    async def elected(self, msg: ProposerElected) -> None:
        await self._timeline.process(msg, recovery=True)

    async def run_acceptor(
        self,
        messages: trio.MemoryReceiveChannel[AppendRequest],
        replies: trio.MemorySendChannel[AcceptorMessage],
    ) -> None:
        await run_wal_acceptor(self._timeline, self._receiver, messages, replies)

    def proposer_connected(self) -> bool:
        return self._timeline.connected_proposers > 0


class LocalTarget:
    """A :class:`Timeline` of this process as a :class:`RecoveryTarget`."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline

    @property
    def ttid(self) -> TenantTimelineId:
        return self.timeline.ttid

    @property
    def node_id(self) -> NodeId:
        return self.timeline.acceptor.node_id

    async def local_view(self) -> LocalView:
        # Read directly, not via snapshot(): idle supervisors of 10,000 timelines do this.
        a = self.timeline.acceptor
        return LocalView(
            term=a.term,
            last_log_term=a.last_log_term,
            flush_lsn=a.flush_lsn,
            peers=self.timeline.current_peers(),
            connected_proposers=self.timeline.connected_proposers,
            now=trio.current_time(),
            commit_lsn=a.commit_lsn,
        )

    async def wait_for_change(self) -> None:
        await self.timeline.changed.wait_changed()

    def open_session(self) -> AbstractAsyncContextManager[LocalSession]:
        return self._session()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[LocalSession]:
        async with self.timeline.receiver("recovery", "peer recovery") as receiver:
            yield LocalSession(self.timeline, receiver)

