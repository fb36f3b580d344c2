"""The seams between the proposer and the network: one safekeeper connection, WAL fetching.

Production plugs in the WebSocket WAL client; tests plug in in-memory fakes that drive a
real acceptor. The proposer treats every exception out of these calls (other than
cancellation) as "this safekeeper is unavailable for now" and reconnects with back-off;
an exception whose ``close_code`` (or ``code``) is 1008 (policy: auth, bad request) or 4004
(timeline not found), whose ``status`` is an HTTP 400/401/403/404 refusal, or an
:class:`~safekeeper_recovery.core.AuthError`, is permanent for that node.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from ..core import AcceptorMessage, Lsn, ProposerMessage, Term

__all__ = ["Connect", "FetchWal", "SafekeeperConnection"]


class SafekeeperConnection(Protocol):
    """One open ``wal_push`` connection to one safekeeper's timeline."""

    async def send(self, msg: ProposerMessage) -> None:
        """Send one message; raise if the connection is gone."""
        ...

    async def receive(self) -> AcceptorMessage:
        """The next message; raise if the connection closed (with the close code, if any)."""
        ...

    async def aclose(self) -> None:
        """Close the connection (idempotent)."""
        ...


Connect = Callable[[str], AbstractAsyncContextManager[SafekeeperConnection]]
"""Open a connection to the safekeeper at a URL (``ws://host:port``); closed on exit."""

FetchWal = Callable[[str, Lsn, Lsn, Term], Awaitable[bytes]]
"""``fetch(url, start, end, term)``: WAL ``start .. end`` from the safekeeper at ``url``,
term-checked against ``term`` (its current term). Returns exactly ``end - start`` bytes or
raises."""
