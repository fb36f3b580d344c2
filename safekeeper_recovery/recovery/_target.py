"""What the recovery engine needs from the timeline it recovers, and nothing more.

The engine drives a local timeline only through :class:`RecoveryTarget`; implementations:
``timeline.LocalTarget`` (a timeline of this process) and, for the sidecar,
``sidecar.RemoteTarget`` (a node's HTTP status + its ``wal_push?recovery=true`` endpoint).
A trio-based safekeeper that embeds the engine implements this Protocol for its own
timeline type. ``LocalView`` and ``select_for`` (the inputs of donor selection and their
one unpacking) live in ``core``, re-exported here.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

import trio

from ..core import (
    AcceptorMessage,
    AppendRequest,
    LocalView,
    NodeId,
    ProposerElected,
    TenantTimelineId,
    Term,
    VoteResponse,
    select_for,
)

__all__ = ["AcceptorSession", "LocalView", "RecoveryTarget", "select_for"]


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
