"""What the recovery engine needs from the timeline it recovers, and nothing more.

The engine drives a local timeline only through :class:`RecoveryTarget`; implementations:
:class:`LocalTarget` (a timeline of this process) and, for the sidecar, ``RemoteTarget``
(a node's HTTP status + its ``wal_push?recovery=true`` endpoint). A trio-based safekeeper
that embeds the engine implements this Protocol for its own timeline type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import attrs
import trio

from ..core import (
    AcceptorMessage,
    AppendRequest,
    DonorSelection,
    Lsn,
    NodeId,
    PeerInfo,
    ProposerElected,
    TenantTimelineId,
    Term,
    VoteRequest,
    VoteResponse,
    select_donors,
)
from ..timeline import Receiver, Timeline, run_wal_acceptor

__all__ = ["AcceptorSession", "LocalTarget", "LocalView", "RecoveryTarget", "select_for"]


@attrs.frozen
class LocalView:
    """The inputs of donor selection, read atomically."""

    term: Term
    last_log_term: Term
    flush_lsn: Lsn
    peers: Sequence[PeerInfo]
    connected_proposers: int
    now: float
    """The target's clock for ``PeerInfo.received_at`` comparisons."""


def select_for(node_id: NodeId, view: LocalView, heartbeat_timeout: float) -> DonorSelection:
    """Donor selection over one local view (the one place the view is unpacked)."""
    return select_donors(
        my_node_id=node_id,
        my_term=view.term,
        my_last_log_term=view.last_log_term,
        my_flush_lsn=view.flush_lsn,
        peers=view.peers,
        connected_proposers=view.connected_proposers,
        now=view.now,
        heartbeat_timeout=heartbeat_timeout,
    )


class AcceptorSession(Protocol):
    """One attempt's channel into the local acceptor (acting as the donor term's leader)."""

    async def vote(self, term: Term) -> VoteResponse:
        """Process ``VoteRequest(term)`` and return the reply."""

    async def elected(self, msg: ProposerElected) -> None:
        """Process ``ProposerElected`` (truncation happens here, through the acceptor)."""

    async def run_acceptor(
        self,
        messages: trio.MemoryReceiveChannel[AppendRequest],
        replies: trio.MemorySendChannel[AcceptorMessage],
    ) -> None:
        """Feed ``messages`` to the acceptor (batched, flushed when the queue drains or every
        second) and send every reply; return after the final flush once ``messages`` is
        closed; close ``replies`` on exit. Processing errors propagate."""

    def proposer_connected(self) -> bool:
        """Whether a proposer is connected to the node now (checked between batches; the
        node itself refuses every message of the session once one is, with
        ``ProposerArrived``)."""


class RecoveryTarget(Protocol):
    """The local timeline, as the recovery engine sees it."""

    @property
    def ttid(self) -> TenantTimelineId: ...

    @property
    def node_id(self) -> NodeId: ...

    async def local_view(self) -> LocalView:
        """Current term, last_log_term, flush_lsn, alive-or-not peers, connected proposers."""

    async def wait_for_change(self) -> None:
        """Return after the local state or the peers table changed (may return spuriously)."""

    def open_session(self) -> AbstractAsyncContextManager[AcceptorSession]:
        """A session for one attempt; it is never counted as a proposer, and yields to one."""


class _LocalSession:
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
        )

    async def wait_for_change(self) -> None:
        await self.timeline.changed.wait_changed()

    def open_session(self) -> AbstractAsyncContextManager[AcceptorSession]:
        return self._session()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AcceptorSession]:
        async with self.timeline.receiver("recovery", "peer recovery") as receiver:
            yield _LocalSession(self.timeline, receiver)

