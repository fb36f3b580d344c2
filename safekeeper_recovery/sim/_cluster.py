"""The simulated world: nodes that crash and restart, a network that partitions, the event
log, and the record of which proposer was elected in which term."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Final

import attrs
import trio

from ..core import Lsn, NodeId, PeerInfo, TenantId, TenantTimelineId, TimelineId
from ..recovery import RecoveryConfig, RecoveryEngine, RecoveryTarget
from ..timeline import Timeline, TimelineParams, TimelineRegistry
from ._bugs import PlantedBugs
from ._faults import Faults
from ._planted import plant_in_node
from ._storage import SimBackend

__all__ = ["PROPOSER_NODE", "SEG_SIZE", "START_LSN", "TTID", "Leader", "SimNode", "World"]

START_LSN: Final = Lsn(0x100_0000)
SEG_SIZE: Final = 1 << 20
TTID: Final = TenantTimelineId(TenantId(bytes(range(16))), TimelineId(bytes(range(16, 32))))
PROPOSER_NODE: Final = 0
"""The network address of every proposer (partitions isolate safekeepers only)."""
RECOVERY_CONFIG: Final = RecoveryConfig(
    connect_timeout=2.0, no_data_timeout=5.0, heartbeat_timeout=5.0, fallback_tick=3.0,
    backoff_initial=0.2, backoff_max=2.0,
)


@attrs.frozen
class Leader:
    """The proposer that sent ProposerElected for a term: who, and what WAL it writes."""

    proposer: int
    seed: int
    start_lsn: Lsn
    total_bytes: int


class World:
    """Everything shared by the simulation's parts. All randomness is ``rng``."""

    def __init__(
        self, seed: int, n_nodes: int, bugs: PlantedBugs, *, keep_events: int,
        forced_faults: frozenset[str] = frozenset(),
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.bugs = bugs
        self.faults = Faults.draw(self.rng, forced=forced_faults)
        self.isolated: set[int] = set()
        self.leaders: dict[int, Leader] = {}
        self.election_conflicts: list[str] = []
        self.events: deque[str] = deque(maxlen=keep_events)
        self.all_events: list[str] | None = None
        self.nodes = {i: SimNode(self, i) for i in range(1, n_nodes + 1)}
        self.nursery: trio.Nursery | None = None
        self.campaigns: dict[int, set[int]] = {}
        """term -> the proposers that asked for votes in it."""
        self.term_bumps: set[int] = set()
        """Terms a donor's term bump made (they stop a proposer legitimately too)."""
        self.unexplained_stops: list[str] = []
        """Proposers stopped by a newer term that no other proposer or bump made (I6)."""
        self.interference: list[str] = []
        """Refusals a proposer saw after recovery wrote to that node since its greeting (I8)."""
        self.liveness_failures: list[str] = []
        """Work that should have finished in a fault-free window and did not (I7)."""

    def explains(self, proposer: int, term: int) -> bool:
        """Whether a term ``>= term`` was made by another proposer or by a term bump."""
        return any(t >= term and who - {proposer} for t, who in self.campaigns.items()) or any(
            t >= term for t in self.term_bumps
        )

    def event(self, what: str) -> None:
        line = f"{trio.current_time():9.3f} {what}"
        self.events.append(line)
        if self.all_events is not None:
            self.all_events.append(line)

    def connected(self, a: int, b: int) -> bool:
        return a == b or (a not in self.isolated and b not in self.isolated)

    def reachable(self, src: int, node: int) -> SimNode | None:
        """``node`` if it is up and ``src`` can reach it, else ``None``."""
        target = self.nodes.get(node)
        if target is None or not target.up or not self.connected(src, node):
            return None
        return target

    def elected(self, proposer: int, leader: Leader, term: int) -> None:
        known = self.leaders.get(term)
        if known is None:
            self.leaders[term] = leader
            self.event(f"proposer {proposer} elected in term {term} at {leader.start_lsn}")
        elif known.proposer != proposer:
            self.election_conflicts.append(
                f"term {term} has two elected proposers: {known.proposer} and {proposer}"
            )


class SimNode:
    """One safekeeper process: registry + recovery engine over a :class:`SimBackend`."""

    def __init__(self, world: World, node_id: int) -> None:
        self.world = world
        self.id = node_id
        self.backend = SimBackend(world.bugs, world.rng)
        self.up = False
        self.incarnation = 0
        self.timeline: Timeline | None = None
        self.engine: RecoveryEngine | None = None
        self.nursery: trio.Nursery | None = None
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self._created = False
        self._starting: trio.Event | None = None

    async def ensure_up(self, nursery: trio.Nursery) -> None:
        """Start an incarnation in ``nursery`` unless one is up or starting (a restart timer
        and the quiesce phase may both want this node back at the same instant)."""
        if self.up:
            return
        if self._starting is not None:
            await self._starting.wait()
            return
        self._starting = starting = trio.Event()
        try:
            await nursery.start(self.run)
        finally:
            self._starting = None
            starting.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """One incarnation of the process, until :meth:`crash`."""
        from ._connections import SimDonorConnector, sim_target

        self.incarnation += 1
        self._stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    engine = RecoveryEngine(
                        SimDonorConnector(self.world, self.id),
                        RECOVERY_CONFIG,
                        rng=random.Random(self.world.rng.random()),
                    )
                    self.engine = engine

                    async def recovery(timeline: Timeline) -> None:
                        target: RecoveryTarget = sim_target(self.world, timeline)
                        await engine.supervise(target)

                    registry = TimelineRegistry(
                        NodeId(self.id), self.backend, services=[recovery]
                    )
                    await nursery.start(registry.serve)
                    if not self._created:
                        await registry.create(TTID, TimelineParams(START_LSN, SEG_SIZE))
                        self._created = True
                    self.timeline = registry.get(TTID)
                    # Acceptor-side planted bugs (nothing reached this acceptor yet: peer
                    # info and proposers come only once the node is up).
                    plant_in_node(
                        self.timeline,
                        commit_regresses=self.world.bugs.commit_regresses,
                        recovery_ignores_proposer=self.world.bugs.recovery_ignores_proposer,
                    )
                    self.up = True
                    self.world.event(f"node {self.id} up (incarnation {self.incarnation}) "
                                     f"{_describe(self.timeline)}")
                    task_status.started()
        finally:
            self.up = False
            self.nursery = None
            self._stopped.set()

    async def crash(self) -> None:
        """Power loss: stop every task of this process, then drop what was not durable."""
        if not self.up:
            return
        self.up = False
        assert self._scope is not None
        self._scope.cancel()
        # Shielded: a crash cut short (the chaos task is cancelled at quiesce) would leave a
        # half-stopped incarnation that a restart then races with.
        with trio.CancelScope(shield=True):
            await self._stopped.wait()
            self.backend.crash()
            self.world.event(f"node {self.id} crashed")

    def peer_info(self) -> PeerInfo:
        assert self.timeline is not None
        snap = self.timeline.snapshot()
        return PeerInfo(
            node_id=NodeId(self.id),
            term=snap.term,
            last_log_term=snap.last_log_term,
            flush_lsn=snap.flush_lsn,
            commit_lsn=snap.commit_lsn,
            http_addr=f"sim://{self.id}",
            wal_addr=f"sim://{self.id}",
            received_at=trio.current_time(),
        )


def _describe(timeline: Timeline) -> str:
    s = timeline.snapshot()
    return f"term={s.term} flush={s.flush_lsn} commit={s.commit_lsn}"


def describe(timeline: Timeline) -> str:
    return _describe(timeline)


Predicate = Callable[[], bool]
