"""One simulated run: 3 or 5 safekeepers + proposers in one ``trio.run`` under a mock clock.

Theory of operation
-------------------
Everything random comes from ``random.Random(seed)`` (fault plan, fault firing, delays,
proposer sizes and WAL seeds, engine jitter), and trio's own scheduling is seeded too
(:func:`seeded_scheduler`), so one seed replays exactly. The run has two phases:

1. *active* (``active_time`` virtual seconds): proposers come and go, writing WAL through the
   production acceptor loop; peer info is exchanged every second; every active fault point
   gets its chance once per second (or per message).
2. *quiesce*: faults off, network healed, crashed nodes restarted, proposers stopped; a
   sealing proposer commits a little WAL over a quorum only, and all nodes (the rest by
   peer recovery) must converge to byte-identical WAL (equal digests) within
   ``converge_time``.
3. *live* (``live_phase``): still no faults; one proposer streams paced WAL while a node
   that was down rejoins, or a disk stalls, or nothing happens. It must commit all its WAL
   within ``live_bound`` without being stopped; then the nodes converge again.

The :class:`InvariantChecker` runs after every task step; the first violation ends the run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import attrs
import structlog
import trio
import trio.testing

from ..core import leaves
from ..proposer import (
    Connect,
    NewerTermError,
    Proposer,
    ProposerConfig,
    ProposerError,
    SafekeeperConnection,
    paced,
    wal_source_factory,
)
from ..timeline import TimelineBroken
from ._bugs import PlantedBugs
from ._cluster import START_LSN, TTID, Leader, SimNode, World, describe
from ._connections import SimConnection, SimProposerLink
from ._determinism import seeded_scheduler
from ._invariants import InvariantChecker, Violation
from ._planted import RefusalStopsProposer

__all__ = ["SimConfig", "SimResult", "replay_command", "run_seed"]

log = logging.getLogger(__name__)

TICK: Final = 1.0
SEALING_ATTEMPTS: Final = 5
"""A sealing proposer can still lose (a node restarting at that instant): it retries."""


def nodes_for(seed: int, nodes: int | None) -> int:
    """The cluster size of a seed: ``nodes`` if given, else 5 on every 5th seed, else 3."""
    if nodes is not None:
        return nodes
    return 5 if seed % 5 == 4 else 3


@attrs.frozen
class SimConfig:
    nodes: int | None = None
    """Safekeepers per run; ``None``: 5 on every 5th seed (``seed % 5 == 4``), else 3."""
    active_time: float = 20.0
    converge_time: float = 60.0
    keep_events: int = 40
    bugs: PlantedBugs = attrs.field(factory=PlantedBugs)
    disabled_invariants: frozenset[str] = frozenset()
    forced_faults: frozenset[str] = frozenset()
    """Fault points active in every seed (the others are drawn as usual)."""
    record_all_events: bool = False
    live_phase: bool = True
    """After convergence, a fault-free window with one proposer (the liveness oracles)."""
    live_bound: float = 30.0
    """Virtual seconds the live phase's proposer may take to commit all its WAL."""


@attrs.frozen
class SimResult:
    seed: int
    violation: Violation | None
    last_events: tuple[str, ...]
    all_events: tuple[str, ...] | None
    active_faults: tuple[str, ...]
    fired: dict[str, int]
    proposers: int
    elected_terms: int
    final_flush: dict[int, str]
    digests: dict[int, str]
    virtual_time: float
    steps: int
    bugs: tuple[str, ...]
    nodes: int | None = None
    """``SimConfig.nodes`` of the run (``None``: chosen by the seed)."""

    @property
    def ok(self) -> bool:
        return self.violation is None

    def report(self) -> str:
        """The failure report: seed, first broken invariant, last events, replay command."""
        lines = [f"seed {self.seed}: " + ("ok" if self.ok else "FAILED")]
        if self.violation is not None:
            v = self.violation
            lines.append(f"first broken invariant: {v.invariant} at t={v.at:.3f}: {v.message}")
        lines.append(f"faults active: {', '.join(self.active_faults) or 'none'}; fired: "
                     f"{dict(sorted(self.fired.items()))}")
        lines.append(f"planted bugs: {', '.join(self.bugs) or 'none'}")
        lines.append("last events:")
        lines.extend(f"  {e}" for e in self.last_events)
        lines.append(f"replay: {replay_command(self.seed, self.bugs, self.nodes)}")
        return "\n".join(lines)


def replay_command(seed: int, bugs: tuple[str, ...] = (), nodes: int | None = None) -> str:
    extra = "".join(f" --bug {b}" for b in bugs)
    if nodes is not None:
        extra += f" --nodes {nodes}"
    return f"python -m safekeeper_recovery.sim --seeds 1 --first-seed {seed}{extra}"


LIVE_SHAPES: Final = ("rejoin", "slow_node", "healthy")


@attrs.define
class LiveRun:
    """The live phase's proposer: its WAL, its pace and how it ended."""

    total: int
    rate: float
    committed: bool = False
    error: str | None = None


class _Stop(Exception):
    """Internal: the run ends early (an invariant broke, or convergence timed out)."""


class _Simulation:
    def __init__(self, seed: int, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.world = World(seed, nodes_for(seed, cfg.nodes), cfg.bugs,
                           keep_events=cfg.keep_events, forced_faults=cfg.forced_faults)
        if cfg.record_all_events:
            self.world.all_events = []
        self.checker = InvariantChecker(self.world, disabled=cfg.disabled_invariants)
        self.proposer_scopes: dict[int, trio.CancelScope] = {}
        self.connections: dict[int, SimConnection] = {}
        self.next_proposer = 0
        self.final_digests: dict[int, str] = {}
        self.urls = tuple(f"sim://{n}" for n in self.world.nodes)

    # ---- the run --------------------------------------------------------------------------

    async def main(self) -> None:
        w = self.world
        w.event(f"seed {w.seed}: faults active {sorted(w.faults.active)}")
        try:
            async with trio.open_nursery() as nursery:
                w.nursery = nursery
                for node in w.nodes.values():
                    await nursery.start(node.run)
                nursery.start_soon(self._watch_invariants)
                nursery.start_soon(self._peer_exchange)
                async with trio.open_nursery() as active:
                    active.start_soon(self._chaos)
                    active.start_soon(self._proposer_driver)
                    await trio.sleep(self.cfg.active_time)
                    active.cancel_scope.cancel()
                await self._quiesce(nursery)
                await self._wait_converged()
                if self.cfg.live_phase:
                    await self._live(nursery)
                    await self._wait_converged()
                nursery.cancel_scope.cancel()
        except _Stop:
            pass
        except BaseExceptionGroup as group:
            _, rest = group.split(_Stop)
            if rest is not None:
                raise rest from None

    async def _watch_invariants(self) -> None:
        # The checker is a trio instrument: it cannot cancel, but it sets an event.
        await self.checker.stopped.wait()
        raise _Stop

    async def _peer_exchange(self) -> None:
        w = self.world
        while True:
            await trio.sleep(TICK)
            infos = {n.id: n.peer_info() for n in w.nodes.values() if n.up}
            for dst in w.nodes.values():
                for src, info in infos.items():
                    if src == dst.id or w.reachable(src, dst.id) is None:
                        continue
                    if w.faults.fires("peer_info_drop"):
                        continue
                    if w.faults.fires("peer_info_delay"):
                        assert w.nursery is not None
                        w.nursery.start_soon(self._deliver_late, dst, info, w.rng.uniform(0, 3))
                        continue
                    if dst.nursery is not None:
                        # Each delivery in the receiver's own process: a node whose disk
                        # stalls (its timeline lock held) delays only its own peer info.
                        dst.nursery.start_soon(self._deliver, dst, info)

    async def _deliver(self, dst: SimNode, info: object) -> None:
        from ..core import PeerInfo

        assert isinstance(info, PeerInfo)
        if dst.up and dst.timeline is not None:
            await dst.timeline.record_peer_info(
                attrs.evolve(info, received_at=trio.current_time())
            )

    async def _deliver_late(self, dst: SimNode, info: object, delay: float) -> None:
        incarnation = dst.incarnation
        await trio.sleep(delay)
        if dst.incarnation == incarnation:
            await self._deliver(dst, info)

    async def _chaos(self) -> None:
        w = self.world
        f = w.faults
        assert w.nursery is not None
        while True:
            await trio.sleep(TICK)
            nodes = list(w.nodes.values())
            if f.fires("partition") and not w.isolated:
                victim = w.rng.choice(nodes).id
                w.isolated.add(victim)
                w.event(f"partition: node {victim} isolated")
                for conn in list(self.connections.values()):
                    if conn.node.id == victim:
                        conn.cut(ConnectionResetError("sim: partitioned"))
                w.nursery.start_soon(self._heal_later, victim, w.rng.uniform(1, 6))
            if f.fires("node_crash"):
                up = [n for n in nodes if n.up]
                if up:
                    victim_node = w.rng.choice(up)
                    await victim_node.crash()
                    w.nursery.start_soon(self._restart_later, victim_node, w.rng.uniform(0.5, 4))
            if f.fires("proposer_crash") and self.proposer_scopes:
                pid = w.rng.choice(sorted(self.proposer_scopes))
                w.event(f"proposer {pid} crashed")
                self.proposer_scopes[pid].cancel()
            if f.fires("new_proposer"):
                w.nursery.start_soon(self._run_proposer)
            if f.fires("dueling_proposers"):
                w.nursery.start_soon(self._run_proposer)
                w.nursery.start_soon(self._run_proposer)
            if f.fires("slow_disk"):
                up = [n for n in nodes if n.up and n.nursery is not None]
                if up:
                    slow = w.rng.choice(up)
                    assert slow.nursery is not None
                    slow.nursery.start_soon(self._stall_disk, slow, w.rng.uniform(0.05, 1.5))
            for node in nodes:
                engine = node.engine
                status = engine.statuses.get(TTID) if engine is not None and node.up else None
                if status is None or status.state != "recovering" or status.donor is None:
                    continue
                donor = w.nodes.get(status.donor)
                if f.fires("donor_term_bump") and donor is not None and donor.up:
                    assert donor.timeline is not None
                    # Recorded before it can be seen: a proposer stopped by it is explained.
                    bump = donor.timeline.acceptor.term + 1
                    w.term_bumps.add(bump)
                    try:
                        term = await donor.timeline.bump_term(bump)
                    except TimelineBroken:
                        continue
                    w.event(f"donor {donor.id} of node {node.id} bumped its term to {term}")

    async def _stall_disk(self, node: SimNode, delay: float) -> None:
        # Memory stores are synchronous, so a slow disk is a stall of the node's storage:
        # every store call runs under the timeline's lock (writes and fsyncs of the acceptor,
        # control-file persists, WAL reads of senders), so holding it delays exactly those,
        # in the node's own nursery (a crash ends the stall).
        timeline = node.timeline
        assert timeline is not None
        async with timeline.lock:
            self.world.event(f"node {node.id}: disk stalls for {delay:.2f}s")
            await trio.sleep(delay)

    async def _heal_later(self, node: int, delay: float) -> None:
        await trio.sleep(delay)
        if node in self.world.isolated:
            self.world.isolated.discard(node)
            self.world.event(f"heal: node {node}")

    async def _restart_later(self, node: SimNode, delay: float) -> None:
        await trio.sleep(delay)
        if self.world.nursery is not None:
            await node.ensure_up(self.world.nursery)

    async def _proposer_driver(self) -> None:
        while True:
            await trio.sleep(self.world.rng.uniform(0, 1))
            await self._run_proposer()

    async def _run_proposer(self, *, sealing: bool = False, live: LiveRun | None = None
                            ) -> bool:
        """One proposer run to its end; whether it committed all its WAL. ``live``: the
        live phase's proposer (paced WAL, its outcome recorded there)."""
        w = self.world
        self.next_proposer += 1
        pid = self.next_proposer
        if live is not None:
            total = live.total
        elif sealing:
            total = w.rng.randrange(1, 8) * 1024
        else:
            total = w.rng.randrange(16, 256) * 1024
        seed = w.rng.randrange(1 << 30)
        skip: frozenset[int] = frozenset()
        if sealing:
            # It asks only a quorum for votes: the others must converge by peer recovery.
            ids = sorted(w.nodes)
            minority = len(ids) - (len(ids) // 2 + 1)
            skip = frozenset(w.rng.sample(ids, w.rng.randint(1, minority)))
            w.event(f"sealing proposer {pid} leaves nodes {sorted(skip)} to recovery")
        link = SimProposerLink(w, pid, Leader(pid, seed, START_LSN, total), skip_nodes=skip)
        config = ProposerConfig(
            safekeepers=self.urls, tenant_id=TTID.tenant_id, timeline_id=TTID.timeline_id,
            total_bytes=total, seed=seed, window_bytes=256 * 1024, response_timeout=3.0,
            keepalive_interval=0.5, reconnect_min=0.1, reconnect_max=1.0,
            lost_quorum_timeout=2.0, drain_timeout=2.0, close_timeout=1.0,
        )
        source = None if live is None else paced(wal_source_factory(config), live.rate)
        kind = RefusalStopsProposer if w.bugs.refusal_stops_proposer else Proposer
        proposer = kind(config, self._tracking(link), fetch_wal=link.fetch_wal,
                        wal_source=source)
        w.event(f"proposer {pid} starts ({total} bytes"
                + (f" at {live.rate / 1024:.0f} KiB/s)" if live else ")"))
        try:
            with trio.CancelScope() as scope:
                self.proposer_scopes[pid] = scope
                try:
                    result = await proposer.run()
                except ProposerError as e:
                    w.event(f"proposer {pid} failed: {type(e).__name__}: {e}")
                    if live is not None:
                        live.error = f"{type(e).__name__}: {e}"
                    if isinstance(e, NewerTermError):
                        # I6: a newer term must come from somewhere: another proposer's
                        # campaign or a term bump (the world saw every one of them).
                        seen = e.term
                        if not w.explains(pid, int(seen)):
                            w.unexplained_stops.append(
                                f"proposer {pid} (term {proposer.statistics().term}) stopped "
                                f"by term {seen}, which no other proposer or bump made: {e}"
                            )
                else:
                    w.event(f"proposer {pid} committed term {result.term} up to {result.end_lsn}")
                    if live is not None:
                        live.committed = True
                    return True
        finally:
            del self.proposer_scopes[pid]
        return False

    def _tracking(self, link: SimProposerLink) -> Connect:
        """``link.connect``, registering open connections so a partition can cut them."""
        ids = self.connections

        @asynccontextmanager
        async def connect(url: str) -> AsyncIterator[SafekeeperConnection]:
            async with link.connect(url) as conn:
                assert isinstance(conn, SimConnection)
                key = id(conn)
                ids[key] = conn
                try:
                    yield conn
                finally:
                    del ids[key]

        return connect

    # ---- the end --------------------------------------------------------------------------

    async def _quiesce(self, nursery: trio.Nursery) -> None:
        w = self.world
        w.faults.enabled = False
        for scope in list(self.proposer_scopes.values()):
            scope.cancel()
        while self.proposer_scopes:  # noqa: ASYNC110  (cancelled proposers unwind promptly)
            await trio.sleep(0.01)
        w.isolated.clear()
        for node in w.nodes.values():
            await node.ensure_up(nursery)
        w.event("quiesce: faults off, healed, proposers stopped, all nodes up")
        # Recovery needs an established leader (a donor's term == its last_log_term), and a
        # proposer stopped after votes leaves none: one sealing proposer commits a little WAL
        # over a quorum of the healed cluster (Neon's simulator also ends with a proposer);
        # the nodes it leaves out must then converge by peer recovery alone.
        for _ in range(SEALING_ATTEMPTS):
            if await self._run_proposer(sealing=True):
                return
            await trio.sleep(TICK)

    async def _live(self, nursery: trio.Nursery) -> None:
        """Phase 3 (I7, I8): no faults, a quorum up, one proposer streaming paced WAL, in one
        of three shapes: a node that was down rejoins mid-stream (its peer recovery and the
        proposer meet), a node's disk stalls, or a healthy cluster. The proposer must
        commit everything within ``live_bound`` and never be stopped."""
        w = self.world
        shape = w.rng.choice(LIVE_SHAPES)
        nodes = list(w.nodes.values())
        total = w.rng.randrange(256, 1024) * 1024
        live = LiveRun(total, total / w.rng.uniform(3, 8))
        w.event(f"live phase: {shape}")
        victim = w.rng.choice(nodes)
        if shape == "rejoin":
            await victim.crash()
        async with trio.open_nursery() as phase:
            async def run() -> None:
                await self._run_proposer(live=live)
                phase.cancel_scope.cancel()

            phase.start_soon(run)
            await trio.sleep(w.rng.uniform(0.5, 3))
            if shape == "rejoin":
                await victim.ensure_up(nursery)
            elif shape == "slow_node" and victim.nursery is not None:
                victim.nursery.start_soon(self._stall_disk, victim, w.rng.uniform(0.3, 2))
            await trio.sleep(self.cfg.live_bound)
            w.liveness_failures.append(
                f"live phase ({shape}): the proposer did not finish within "
                f"{self.cfg.live_bound:g}s"
            )
            phase.cancel_scope.cancel()
        if live.error is not None:
            w.liveness_failures.append(f"live phase ({shape}): the proposer stopped: "
                                       f"{live.error}")
        elif not live.committed and not w.liveness_failures:
            w.liveness_failures.append(f"live phase ({shape}): the proposer did not commit")
        await victim.ensure_up(nursery)

    async def _wait_converged(self) -> None:
        w = self.world
        digests: dict[int, str] | None = None
        with trio.move_on_after(self.cfg.converge_time) as scope:
            while (digests := await self._converged()) is None:  # noqa: ASYNC110
                await trio.sleep(0.5)  # digests are not events: poll
        if scope.cancelled_caught:
            states = ", ".join(
                f"node {n.id}: {describe(n.timeline)}" for n in w.nodes.values() if n.timeline
            )
            self.checker.fail(
                "convergence",
                f"no byte-identical WAL after {self.cfg.converge_time}s of quiet: {states}",
            )
            return
        self.checker.check(full=True)
        assert digests is not None
        self.final_digests = digests
        w.event("converged: " + ", ".join(f"node {n}={d[:12]}" for n, d in
                                          self.final_digests.items()))

    async def _converged(self) -> dict[int, str] | None:
        """Every node's digest if all are up with byte-identical WAL, else ``None``."""
        nodes = list(self.world.nodes.values())
        if not all(n.up and n.timeline is not None for n in nodes):
            return None
        flushes = {n.timeline.snapshot().flush_lsn for n in nodes if n.timeline}
        if len(flushes) != 1:
            return None
        digests = await self.digests()
        return digests if len(set(digests.values())) == 1 else None

    async def digests(self) -> dict[int, str]:
        out = {}
        for n in self.world.nodes.values():
            if n.timeline is not None and n.up:
                out[n.id] = await n.timeline.digest(START_LSN, n.timeline.snapshot().flush_lsn)
        return out


def run_seed(seed: int, cfg: SimConfig | None = None) -> SimResult:
    """Run one seed to the end; never raises for a protocol failure (see ``violation``)."""
    cfg = cfg or SimConfig()
    sim = _Simulation(seed, cfg)
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def body() -> None:
        await sim.main()

    product_log = logging.getLogger("safekeeper_recovery")
    saved_level = product_log.level
    # Faults make the product log warnings by the thousand; the event log tells the story.
    product_log.setLevel(logging.CRITICAL)
    with seeded_scheduler(seed), structlog.testing.capture_logs():
        try:
            trio.run(body, clock=clock, instruments=[sim.checker])
        except Exception as e:  # a crash of the system under test is a finding, not a bug here
            if sim.checker.violation is None:
                leaf = leaves(e)[0]
                sim.checker.violation = Violation(
                    "no_crash", f"{type(leaf).__name__}: {leaf}", math.nan
                )
            log.debug("seed %d crashed", seed, exc_info=True)
        finally:
            product_log.setLevel(saved_level)
    w = sim.world
    return SimResult(
        seed=seed,
        violation=sim.checker.violation,
        last_events=tuple(w.events),
        all_events=tuple(w.all_events) if w.all_events is not None else None,
        active_faults=tuple(sorted(w.faults.active)),
        fired=dict(w.faults.fired),
        proposers=sim.next_proposer,
        elected_terms=len(w.leaders),
        final_flush={n.id: str(n.timeline.snapshot().flush_lsn) for n in w.nodes.values()
                     if n.timeline is not None},
        digests=sim.final_digests,
        virtual_time=clock.current_time(),
        steps=sim.checker.steps,
        bugs=tuple(cfg.bugs.active()),
        nodes=cfg.nodes,
    )
