"""A node reached over its public endpoints, as a :class:`RecoveryTarget` (sidecar mode).

The local view comes from the node's timeline status JSON (which lists its alive peers),
and the acceptor is driven through ``wal_push?recovery=true`` — marked so the node never
counts it as a proposer, and processes it only while no proposer is connected (it closes
the push with 4010 as soon as one is, which ends the attempt with ``ProposerArrived``).
Everything else is the same engine code as in-process recovery.

Waking: the sidecar (``serve_sidecar``) long-polls the node's change feed and notifies each
target's :attr:`RemoteTarget.changed` when its timeline changed, so an idle timeline costs
no requests at all. A target used on its own, without a ``changed`` watch, falls back to
looking every ``poll_interval`` seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager

import trio

from ..core import (
    AcceptorMessage,
    AppendRequest,
    AppendResponse,
    Greeting,
    LocalView,
    Lsn,
    NodeId,
    PeerInfo,
    ProposerArrived,
    ProposerElected,
    RecoveryError,
    TenantTimelineId,
    Term,
    VoteRequest,
    VoteResponse,
)
from ..recovery import AcceptorSession
from ..timeline import Watch
from ..transport import SafekeeperClient, WalPushClosed, open_wal_push

__all__ = ["RemoteTarget", "local_view_from_status"]


def local_view_from_status(doc: dict[str, object], now: float) -> LocalView:
    """Donor-selection inputs from a node's timeline status JSON (peers are alive ones)."""
    state = doc["acceptor_state"]
    assert isinstance(state, dict)
    peers = []
    for p in doc.get("peers", []):  # type: ignore[attr-defined]  # JSON list
        peers.append(
            PeerInfo(
                node_id=NodeId(int(p["sk_id"])),
                term=int(p["term"]),
                last_log_term=int(p["last_log_term"]),
                flush_lsn=Lsn.parse(p["flush_lsn"]),
                commit_lsn=Lsn.parse(p["commit_lsn"]),
                http_addr=str(p["http_addr"]),
                wal_addr=str(p["wal_addr"]),
                received_at=now,  # the node lists only peers it considers alive
            )
        )
    connected = doc.get("connected_proposers")
    if not isinstance(connected, int):  # a node of an older release: streaming ones only
        receivers: list[dict[str, object]] = doc.get("walreceivers", [])  # type: ignore[assignment]
        connected = sum(
            1 for r in receivers if r.get("kind") == "proposer" and r.get("status") == "streaming"
        )
    return LocalView(
        term=int(state["term"]),
        last_log_term=int(doc.get("last_log_term", state["epoch"])),  # type: ignore[call-overload]
        flush_lsn=Lsn.parse(str(doc["flush_lsn"])),
        peers=tuple(peers),
        connected_proposers=connected,
        now=now,
    )


@contextmanager
def _yielding() -> Iterator[None]:
    """The node's 4010 close (a proposer connected) is the attempt's ``ProposerArrived``."""
    try:
        yield
    except WalPushClosed as e:
        if e.proposer_arrived:
            raise ProposerArrived(f"the node ended the recovery push: {e.reason}") from e
        raise


class _RemoteSession:
    def __init__(self, conn: object, target: RemoteTarget) -> None:
        self._conn = conn
        self._target = target

    async def vote(self, term: Term) -> VoteResponse:
        with _yielding():
            await self._conn.send(VoteRequest(term))  # type: ignore[attr-defined]
            reply = await self._conn.receive()  # type: ignore[attr-defined]
        if not isinstance(reply, VoteResponse):
            raise RecoveryError(f"expected VoteResponse from the node, got {reply!r}")
        return reply

    async def elected(self, msg: ProposerElected) -> None:
        with _yielding():
            await self._conn.send(msg)  # type: ignore[attr-defined]  # WalPushConnection

    async def run_acceptor(
        self,
        messages: trio.MemoryReceiveChannel[AppendRequest],
        replies: trio.MemorySendChannel[AcceptorMessage],
    ) -> None:
        conn = self._conn
        with _yielding():
            await self._pump(conn, messages, replies)

    @staticmethod
    async def _pump(
        conn: object,
        messages: trio.MemoryReceiveChannel[AppendRequest],
        replies: trio.MemorySendChannel[AcceptorMessage],
    ) -> None:
        async with replies:

            async def pump_in() -> None:
                while True:
                    reply = await conn.receive()  # type: ignore[attr-defined]
                    if isinstance(reply, AppendResponse):
                        await replies.send(reply)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump_in)
                async with messages:
                    async for msg in messages:
                        await conn.send(msg)  # type: ignore[attr-defined]
                # The node flushes on disconnect (its WalAcceptor's rule), so closing the
                # connection after the last append is enough.
                nursery.cancel_scope.cancel()

    def proposer_connected(self) -> bool:
        return self._target.last_view_proposers


class RemoteTarget:
    """One timeline of a node reached at ``http_url`` (status) and ``wal_url`` (push).

    ``changed``: notified by whoever watches the node's change feed (the sidecar);
    :meth:`wait_for_change` waits on it. Without it, :meth:`wait_for_change` sleeps
    ``poll_interval`` seconds. ``client``: a shared client of the node (else one is made
    per status read).
    """

    def __init__(
        self,
        ttid: TenantTimelineId,
        node_id: NodeId,
        http_url: str,
        wal_url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        poll_interval: float = 0.5,
        changed: Watch | None = None,
        client: SafekeeperClient | None = None,
    ) -> None:
        self._ttid = ttid
        self._node_id = node_id
        self.http_url = http_url
        self.wal_url = wal_url
        self.token = token
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.changed = changed
        self._client = client
        self.last_view_proposers = False

    @property
    def ttid(self) -> TenantTimelineId:
        return self._ttid

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    async def local_view(self) -> LocalView:
        if self._client is not None:
            doc = await self._client.timeline_status(self._ttid)
        else:
            async with SafekeeperClient(self.http_url, token=self.token,
                                        timeout=self.timeout) as c:
                doc = await c.timeline_status(self._ttid)
        view = local_view_from_status(doc, trio.current_time())
        self.last_view_proposers = view.connected_proposers > 0
        return view

    async def wait_for_change(self) -> None:
        if self.changed is None:
            await trio.sleep(self.poll_interval)
        else:
            await self.changed.wait_changed()

    def open_session(self) -> AbstractAsyncContextManager[AcceptorSession]:
        return self._session()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AcceptorSession]:
        async with open_wal_push(
            self.wal_url, self._ttid.tenant_id, self._ttid.timeline_id, token=self.token,
            recovery=True, connect_timeout=self.timeout,
        ) as conn:
            with _yielding():
                await conn.send(Greeting(self._ttid.tenant_id, self._ttid.timeline_id))
                await conn.receive()  # AcceptorGreeting
            yield _RemoteSession(conn, self)
