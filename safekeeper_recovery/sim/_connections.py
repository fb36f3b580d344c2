"""In-memory connections: proposer → node (driving the real WAL acceptor loop) and
recipient → donor (the real WAL sender through ``InProcessDonorConnector``), both subject to
the run's faults and partitions."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import attrs
import trio

from ..core import (
    AcceptorError,
    AcceptorGreeting,
    AcceptorMessage,
    DonorUnavailable,
    Keepalive,
    Lsn,
    NodeId,
    PeerInfo,
    ProposerElected,
    ProposerMessage,
    RemoteProtocolError,
    StatusUpdate,
    TenantTimelineId,
    Term,
    VoteRequest,
    VoteResponse,
    WalData,
)
from ..proposer import SafekeeperConnection
from ..recovery import DonorStatus, DonorStream, RecoveryTarget
from ..timeline import (
    InProcessDonorConnector,
    LocalSession,
    LocalTarget,
    Timeline,
    TimelineBroken,
    run_wal_acceptor,
)
from ._cluster import PROPOSER_NODE, Leader, SimNode, World
from ._planted import term_blind

__all__ = ["SimConnection", "SimDonorConnector", "SimProposerLink", "node_of", "sim_target"]

MAX_DELAY = 0.3


def node_of(url: str) -> int:
    return int(url.removeprefix("sim://"))


class SimConnection:
    """A proposer's ``wal_push`` connection; the server half runs in the node's nursery."""

    def __init__(self, link: SimProposerLink, node: SimNode) -> None:
        self.world = link.world
        self.link = link
        self.proposer = link.proposer
        self.node = node
        self.leader = link.leader
        self._vote_term = -1
        self._to_server, self.server_messages = trio.open_memory_channel[ProposerMessage](
            math.inf
        )
        self.server_replies, self._replies = trio.open_memory_channel[AcceptorMessage](math.inf)
        self.error: Exception | None = None
        self.done = trio.Event()
        self.server_scope = trio.CancelScope()
        self._timeline: Timeline | None = None
        self._recovery_mark: int | None = None

    def cut(self, error: Exception) -> None:
        """Reset the connection: the server stops at once (no flush), the client sees
        ``error``."""
        if self.error is None:
            self.error = error
        self.server_scope.cancel()
        self.done.set()

    async def send(self, msg: ProposerMessage) -> None:
        await trio.lowlevel.checkpoint()
        if not self.done.is_set() and self.world.reachable(PROPOSER_NODE, self.node.id) is None:
            self.cut(ConnectionResetError("sim: partitioned"))
        if not self.done.is_set() and self.world.faults.fires("conn_cut"):
            self.world.event(f"cut proposer {self.proposer} → node {self.node.id}")
            self.cut(ConnectionResetError("sim: connection cut"))
        if self.done.is_set():
            raise self.error or ConnectionResetError("sim: connection closed")
        if self.world.faults.fires("msg_delay"):
            # Head-of-line delay: order within the connection holds, across them it does not.
            await trio.sleep(self.world.rng.uniform(0, MAX_DELAY))
        if isinstance(msg, VoteRequest):
            if self.node.id in self.link.skip_nodes:
                self.cut(ConnectionResetError("sim: this proposer does not ask this node"))
                raise self.error or ConnectionResetError("sim: connection closed")
            self._vote_term = int(msg.term)
            self.world.campaigns.setdefault(int(msg.term), set()).add(self.proposer)
        if isinstance(msg, ProposerElected):
            leader = self.leader
            start = msg.term_history[-1].lsn
            self.world.elected(
                self.proposer, Leader(leader.proposer, leader.seed, start, leader.total_bytes),
                int(msg.term),
            )
        try:
            self._to_server.send_nowait(msg)
        except trio.BrokenResourceError:
            raise self.error or ConnectionResetError("sim: connection closed") from None

    async def receive(self) -> AcceptorMessage:
        try:
            reply = await self._replies.receive()
        except trio.EndOfChannel:
            await self.done.wait()
            raise self.error or ConnectionResetError("sim: connection closed") from None
        if isinstance(reply, AcceptorGreeting):
            self._recovery_mark = self._recovery_messages()
        if (isinstance(reply, VoteResponse) and self.world.bugs.double_vote
                and not reply.vote_given and int(reply.term) == self._vote_term):
            reply = attrs.evolve(reply, vote_given=True)  # R2 with ">=": a second vote
        if isinstance(reply, VoteResponse) and not reply.vote_given:
            self._check_interference(f"vote refused in term {reply.term}")
        return reply

    def _recovery_messages(self) -> int | None:
        timeline = self._timeline
        return None if timeline is None else timeline.recovery_messages

    def _check_interference(self, refusal: str) -> None:
        """I8: a refusal after recovery wrote to this node since our greeting was answered
        is recovery disturbing a proposer (recovery must yield from the greeting on)."""
        now, mark = self._recovery_messages(), self._recovery_mark
        if now is not None and mark is not None and now > mark:
            self.world.interference.append(
                f"proposer {self.proposer} at node {self.node.id}: {refusal} after "
                f"{now - mark} recovery message(s) since its greeting"
            )

    async def aclose(self) -> None:
        self._to_server.close()
        await trio.lowlevel.checkpoint()

    async def serve(self, timeline: Timeline) -> None:
        """The server half: the production acceptor loop on the node's timeline."""
        self._timeline = timeline
        try:
            with self.server_scope:
                async with timeline.attach(), timeline.receiver(
                    "proposer", f"proposer {self.proposer}"
                ) as receiver:
                    await run_wal_acceptor(
                        timeline, receiver, self.server_messages, self.server_replies
                    )
        except AcceptorError as e:  # the WAL port closes with 4009 and the reason
            self._check_interference(f"refused: {e}")
            self.error = self.error or RemoteProtocolError(str(e), close_code=4009)
        except TimelineBroken as e:
            self.error = self.error or RemoteProtocolError(str(e), close_code=1011)
        finally:
            self.server_replies.close()
            self.done.set()


class SimProposerLink:
    """The ``Connect`` and ``FetchWal`` seams of one proposer.

    ``skip_nodes``: nodes this proposer greets but never asks for a vote (their connection
    is reset on the VoteRequest), so its term is above theirs yet they must catch up by
    peer recovery.
    """

    def __init__(
        self, world: World, proposer: int, leader: Leader, *,
        skip_nodes: frozenset[int] = frozenset(),
    ) -> None:
        self.world = world
        self.proposer = proposer
        self.leader = leader
        self.skip_nodes = skip_nodes

    def connect(self, url: str) -> AbstractAsyncContextManager[SafekeeperConnection]:
        return self._connect(url)

    @asynccontextmanager
    async def _connect(self, url: str) -> AsyncIterator[SafekeeperConnection]:
        await trio.lowlevel.checkpoint()
        node = self.world.reachable(PROPOSER_NODE, node_of(url))
        if node is None or node.nursery is None or node.timeline is None:
            raise ConnectionRefusedError(f"sim: {url} is unreachable")
        conn = SimConnection(self, node)
        node.nursery.start_soon(conn.serve, node.timeline)
        try:
            yield conn
        finally:
            await conn.aclose()

    async def fetch_wal(self, url: str, start: Lsn, end: Lsn, term: Term) -> bytes:
        out = bytearray()
        pos = start
        while pos < end:
            node = self.world.reachable(PROPOSER_NODE, node_of(url))
            if node is None or node.timeline is None:
                raise ConnectionRefusedError(f"sim: {url} is unreachable")
            data = await node.timeline.read_wal(pos, int(end) - int(pos), term=term)
            if not data:
                raise ConnectionResetError(f"sim: {url} has no WAL at {pos}")
            out += data
            pos = pos + len(data)
        return bytes(out)


class _SimStream:
    def __init__(self, world: World, inner: DonorStream, donor: SimNode, recipient: int) -> None:
        self._world = world
        self._inner = inner
        self._donor = donor
        self._incarnation = donor.incarnation
        self._recipient = recipient

    def _check(self) -> None:
        d = self._donor
        if not d.up or d.incarnation != self._incarnation:
            raise DonorUnavailable(f"sim: donor {d.id} crashed")
        if not self._world.connected(self._recipient, d.id):
            raise DonorUnavailable(f"sim: donor {d.id} is partitioned away")

    async def receive(self) -> WalData | Keepalive:
        self._check()
        if self._world.faults.fires("msg_delay"):
            await trio.sleep(self._world.rng.uniform(0, MAX_DELAY))
        msg = await self._inner.receive()
        self._check()
        if (self._world.bugs.recovery_stops_early and isinstance(msg, WalData)
                and msg.end_lsn >= msg.wal_end):
            # Planted bug: the chunk that reaches the donor's flush_lsn loses its last byte.
            if len(msg.data) > 1:
                return attrs.evolve(msg, data=msg.data[:-1])
            return Keepalive(msg.wal_end, msg.timestamp_us)
        return msg

    async def send_status(self, update: StatusUpdate) -> None:
        self._check()
        await self._inner.send_status(update)


class SimDonorConnector:
    """Donors are other simulated nodes, reachable unless down or partitioned away."""

    def __init__(self, world: World, recipient: int) -> None:
        self._world = world
        self._recipient = recipient
        self._inner = InProcessDonorConnector(self._lookup)

    def _lookup(self, node: NodeId, ttid: TenantTimelineId) -> Timeline | None:
        target = self._world.reachable(self._recipient, int(node))
        if target is None or target.timeline is None:
            return None
        if self._world.bugs.no_sender_term_check:
            return term_blind(target.timeline)
        return target.timeline

    async def fetch_status(self, donor: PeerInfo, ttid: TenantTimelineId) -> DonorStatus:
        return await self._inner.fetch_status(donor, ttid)

    def open_stream(
        self, donor: PeerInfo, ttid: TenantTimelineId, start_lsn: Lsn, term: Term
    ) -> AbstractAsyncContextManager[DonorStream]:
        return self._open(donor, ttid, start_lsn, term)

    @asynccontextmanager
    async def _open(
        self, donor: PeerInfo, ttid: TenantTimelineId, start_lsn: Lsn, term: Term
    ) -> AsyncIterator[DonorStream]:
        node = self._world.reachable(self._recipient, int(donor.node_id))
        if node is None:
            raise DonorUnavailable(f"sim: donor {donor.node_id} is unreachable")
        self._world.event(
            f"node {self._recipient} recovers from {node.id} at {start_lsn} (term {term})"
        )
        async with self._inner.open_stream(donor, ttid, start_lsn, term) as stream:
            yield _SimStream(self._world, stream, node, self._recipient)


def sim_target(world: World, timeline: Timeline) -> RecoveryTarget:
    """The recovery target of a node (the seam where recovery-side bugs are planted)."""
    if world.bugs.recovery_ignores_proposer:
        return _HeedlessTarget(timeline)
    return LocalTarget(timeline)


class _HeedlessTarget(LocalTarget):
    """Planted bug ``recovery_ignores_proposer``: sessions never see a proposer (the node's
    own check is off too: ``_planted.plant_in_node``)."""

    def open_session(self) -> AbstractAsyncContextManager[LocalSession]:
        return self._heedless()

    @asynccontextmanager
    async def _heedless(self) -> AsyncIterator[LocalSession]:
        async with super().open_session() as session:
            session.proposer_connected = lambda: False  # type: ignore[method-assign]
            yield session
