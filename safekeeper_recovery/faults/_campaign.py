"""One run of the campaign: a cluster in namespaces, the workload, the nemesis, the checks.

``await run_schedule(schedule, config, out_dir)`` builds the network and starts the nodes,
creates the timeline, writes a first run to completion (the quiet baseline: file
descriptors), then runs the workload, the nemesis (``schedule``) and a sampler (every node's
flush, commit and term history every ``SAMPLE_INTERVAL``) side by side for the schedule's
duration. Then it heals everything, waits for convergence, checks (``_check``) and
returns a :class:`RunResult`. Every process and namespace it made is gone when it returns
or raises.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Final, Literal, final

import attrs
import trio

from ..core import Lsn, TermHistory, TermLsn
from ..proposer import Election, ProposerConfig, WalSource, wal_source_factory
from ..testing import NodeProcess
from ..transport import HttpError, parse_acceptor_state
from ._check import FD_SLACK, Evidence, NodeEnd, Violation, check, expected_digest
from ._cluster import SEG_SIZE, START_LSN, TTID, NetCluster, open_cluster
from ._schedule import Fault, Schedule
from ._workload import ProposerRun, Workload, python_cli

__all__ = ["Band", "CampaignConfig", "RunResult", "Sample", "Tamper", "run_schedule"]

SAMPLE_INTERVAL: Final = 0.25
LIVENESS_TIMEOUT: Final = 60.0
FD_QUIET_TIMEOUT: Final = 30.0


Tamper = Callable[[Mapping[int, NodeProcess]], Awaitable[None]]
"""A planted fault run on the nodes right after healing, before the checks: how a test shows
that the checks catch what a product bug would do (e.g. a disk that lost acknowledged WAL)."""


@final
@attrs.frozen
class CampaignConfig:
    rate: int = 256 * 1024
    """Workload bytes per second."""
    run_seconds: float = 20.0
    """Length of one proposer run at ``rate`` (its --bytes is rate x this)."""
    wal_format: Literal["random", "pg"] = "random"
    convergence_bound: float = 30.0
    keep_data: bool = False

    @property
    def run_bytes(self) -> int:
        return int(self.rate * self.run_seconds)


@final
@attrs.frozen
class Sample:
    t: float
    node: int
    flush: int
    commit: int
    term: int


@final
@attrs.frozen
class Band:
    """A fault as it happened: seconds since the run began."""

    fault: Fault
    start: float
    end: float


@final
@attrs.frozen
class RunResult:
    schedule: Schedule
    violations: tuple[Violation, ...]
    committed_bytes: int
    """WAL committed from the timeline's start, every byte of it checked (C-a)."""
    workload_bytes: int
    """Of those, the ones committed while the schedule ran (after the first run)."""
    samples: tuple[Sample, ...]
    bands: tuple[Band, ...]
    runs: tuple[ProposerRun, ...]
    converged_after: float | None
    seconds: float
    out_dir: Path
    tag: str
    """The run's network tag: its namespaces are ``skf<tag>-*``."""

    @property
    def ok(self) -> bool:
        return not self.violations


async def run_schedule(schedule: Schedule, config: CampaignConfig, out_dir: Path,
                       tamper: Tamper | None = None) -> RunResult:
    """Run ``schedule`` and check it (see the module docstring). Raises only for a harness
    failure (a namespace that cannot be made, a node that never starts); a product failure
    is a violation in the result."""
    await trio.Path(out_dir).mkdir(parents=True, exist_ok=True)
    tag = f"{(os.getpid() * 31 + schedule.seed) & 0xFFFF:04x}"
    events: list[str] = []
    try:
        async with open_cluster(tag, schedule.nodes, out_dir) as cluster:
            run = _Run(schedule, config, out_dir, cluster, tamper, events)
            try:
                return await run.main()
            finally:
                run.workload.kill()
    finally:
        (out_dir / "events.txt").write_text("\n".join(events) + "\n")


class _Run:
    def __init__(self, schedule: Schedule, config: CampaignConfig, out_dir: Path,
                 cluster: NetCluster, tamper: Tamper | None, events: list[str]) -> None:
        self.tamper = tamper
        self.schedule = schedule
        self.config = config
        self.out_dir = out_dir
        self.cluster = cluster
        self.net = cluster.net
        self.nodes = cluster.nodes
        self.t0 = trio.current_time()
        self.workload = Workload(self._propose_argv, out_dir / "proposer", self._now)
        self.samples: list[Sample] = []
        self.bands: list[Band] = []
        self.seen: set[tuple[str, TermLsn]] = set()
        self.max_commit = START_LSN
        self.events = events

    def event(self, what: str) -> None:
        """One line of the run's ``events.txt``: what happened when (seconds since t0)."""
        self.events.append(f"{self._now():8.2f} {what}")

    def _now(self) -> float:
        return trio.current_time() - self.t0

    def _propose_argv(self, _index: int, nbytes: int | None = None,
                      rate: bool = True) -> list[str]:
        return self.cluster.propose_argv(
            nbytes=nbytes or self.config.run_bytes, seed=self.schedule.seed,
            wal_format=self.config.wal_format, rate=self.config.rate if rate else None)

    async def main(self) -> RunResult:
        self.event("nodes up, timeline created")
        # Unpaced. pg WAL's bytes depend on the run's size (its trailer, S2-S3) and C-a
        # rebuilds every term with the workload's size, so pg writes it in full; random
        # WAL's bytes do not, and a short first run starts the schedule sooner.
        size = self.config.run_bytes if self.config.wal_format == "pg" else 256 * 1024
        first = await self.workload.run_once(self._propose_argv(0, size, rate=False))
        if first.rc != 0:
            raise RuntimeError(f"the first proposer run failed: see {self.out_dir}/proposer")
        await self._wait_converged(self.config.convergence_bound)
        fds_start = {i: _fd_count(n) for i, n in self.nodes.items()}
        base_commit = self.max_commit
        self.event(f"quiet start, descriptors {fds_start}; the schedule begins")
        self.t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sample_forever)
            nursery.start_soon(self.workload.serve)
            await self._nemesis()
            await trio.sleep_until(self.t0 + self.schedule.duration)
            await self._heal_all()
            nursery.cancel_scope.cancel()
        self.event("healed")
        if self.tamper is not None:
            await self.tamper(self.nodes)
            self.event("tampered")
        healed = self._now()
        converged = await self._wait_converged(self.config.convergence_bound)
        self.event(f"converged: {converged is not None}")
        converged_after = None if converged is None else converged - healed
        return await self._check(fds_start, base_commit, converged_after)

    # -- the nemesis --------------------------------------------------------------------

    async def _nemesis(self) -> None:
        for fault in self.schedule.faults:
            await trio.sleep_until(self.t0 + fault.start)
            started = self._now()
            self.event(f"inject {fault}")
            await self._inject(fault)
            await trio.sleep_until(self.t0 + fault.end)
            await self._heal(fault)
            self.event(f"heal {fault.kind}")
            self.bands.append(Band(fault, started, self._now()))

    async def _inject(self, f: Fault) -> None:
        net = self.net
        if f.kind == "partition":
            rest = [m for m in net.members if m not in f.nodes]
            for a in f.nodes:
                for b in rest:
                    await trio.to_thread.run_sync(net.drop, a, b)
                    await trio.to_thread.run_sync(net.drop, b, a)
        elif f.kind == "one_way":
            receiver, sender = f.nodes
            await trio.to_thread.run_sync(net.drop, receiver, sender)
        elif f.kind == "loss":
            await trio.to_thread.run_sync(net.loss, f.nodes[0], f.amount)
        elif f.kind == "slow":
            await trio.to_thread.run_sync(net.slow, f.nodes[0], f.amount)
        elif f.kind == "pause":
            self.cluster.signal(f.nodes[0], signal.SIGSTOP)
        elif f.kind == "kill":
            await self.nodes[f.nodes[0]].stop(kill=True)
        elif f.kind == "proposer_restart":
            self.workload.kill()

    async def _heal(self, f: Fault) -> None:
        if f.kind in ("partition", "one_way", "loss", "slow"):
            await trio.to_thread.run_sync(self.net.heal)
        elif f.kind == "pause":
            self.cluster.signal(f.nodes[0], signal.SIGCONT)
        elif f.kind == "kill":
            await self.nodes[f.nodes[0]].start()

    async def _heal_all(self) -> None:
        await trio.to_thread.run_sync(self.net.heal)
        for i, node in self.nodes.items():
            if node.running:
                self.cluster.signal(i, signal.SIGCONT)
            else:
                await node.start()

    # -- observing ----------------------------------------------------------------------

    async def _status(self, node_id: int) -> tuple[Lsn, Lsn, int, TermHistory] | None:
        """``(flush, commit, term, history)`` of a node, or None if it does not answer."""
        try:
            async with self.cluster.client(node_id) as client:
                status = await client.timeline_status(TTID)
        except HttpError:
            return None
        term, history = parse_acceptor_state(status)
        flush, commit = Lsn.parse(str(status["flush_lsn"])), Lsn.parse(str(status["commit_lsn"]))
        self.seen.update((f"n{node_id}", entry) for entry in history)
        self.max_commit = max(self.max_commit, commit)
        return flush, commit, term, history

    async def _statuses(self) -> dict[int, tuple[Lsn, Lsn, int, TermHistory] | None]:
        out: dict[int, tuple[Lsn, Lsn, int, TermHistory] | None] = {}

        async def one(i: int) -> None:
            out[i] = await self._status(i)

        async with trio.open_nursery() as nursery:
            for i in self.nodes:
                nursery.start_soon(one, i)
        return out

    async def _sample_forever(self) -> None:
        while True:
            t = self._now()
            for i, st in (await self._statuses()).items():
                if st is not None:
                    self.samples.append(Sample(t, i, int(st[0]), int(st[1]), st[2]))
            await trio.sleep(SAMPLE_INTERVAL)

    async def _wait_converged(self, bound: float) -> float | None:
        """The time (since t0) when every node answered with one flush LSN and one digest up
        to it; None if that did not happen within ``bound`` seconds."""
        with trio.move_on_after(bound):
            while True:
                statuses = await self._statuses()
                flushes = {st[0] for st in statuses.values() if st is not None}
                if None not in statuses.values() and len(flushes) == 1:
                    end = flushes.pop()
                    digests = await self._digests(end)
                    if None not in digests.values() and len(set(digests.values())) == 1:
                        return self._now()
                await trio.sleep(SAMPLE_INTERVAL)
        return None

    async def _digests(self, until: Lsn) -> dict[int, str | None]:
        out: dict[int, str | None] = {}

        async def one(i: int) -> None:
            try:
                async with self.cluster.client(i, timeout=10.0) as client:
                    out[i] = await client.digest(TTID, START_LSN, until)
            except HttpError:
                out[i] = None

        async with trio.open_nursery() as nursery:
            for i in self.nodes:
                nursery.start_soon(one, i)
        return out

    # -- checking -----------------------------------------------------------------------

    async def _check(self, fds_start: dict[int, int], base_commit: Lsn,
                     converged_after: float | None) -> RunResult:
        statuses = await self._statuses()
        for r in self.workload.runs:
            if r.commit_lsn is not None:
                self.max_commit = max(self.max_commit, r.commit_lsn)
            if r.term is not None and r.start_lsn is not None:
                self.seen.add((f"proposer run {r.index}", TermLsn(r.term, r.start_lsn)))
        committed = self.max_commit
        answered = {i: st for i, st in statuses.items() if st is not None}
        best = max(answered.values(), key=lambda st: (st[3].last_log_term(st[0]), st[0]),
                   default=None)
        history = best[3] if best is not None else TermHistory([TermLsn(0, START_LSN)])
        expected = await trio.to_thread.run_sync(
            expected_digest, history, committed, self._source_for)
        digests = await self._digests(committed)
        self.event(f"committed {committed}, expected digest {expected[:12]}, nodes {digests}")
        liveness = await self._liveness()
        self.event(f"liveness run exited {liveness}")
        verify = await self._verify() if self.config.wal_format == "pg" else {}
        fds_end = await self._quiet_fds(fds_start)
        self.event(f"descriptors {fds_end}")
        exits = {}
        for i, node in self.nodes.items():
            exits[i] = await node.stop()
        ends = []
        for i, node in self.nodes.items():
            st = statuses[i]
            ends.append(NodeEnd(
                i, st[0] if st else Lsn(0), st[3] if st else TermHistory([]), digests[i],
                verify.get(i), fds_start[i], fds_end[i], exits[i], _tracebacks(node.logs()),
            ))
        evidence = Evidence(
            tuple(ends), committed, expected, tuple(sorted(self.seen, key=lambda s: s[1])),
            converged_after, self.config.convergence_bound, liveness,
            sum(r.tracebacks for r in self.workload.runs),
        )
        violations = check(evidence)
        self.event(f"stopped: exit codes {exits}; violations {[str(v) for v in violations]}")
        if not violations and not self.config.keep_data:
            for node in self.nodes.values():
                shutil.rmtree(node.work_dir / "data", ignore_errors=True)
        return RunResult(
            self.schedule, violations, int(committed) - int(START_LSN),
            int(committed) - int(base_commit), tuple(self.samples),
            tuple(self.bands), tuple(self.workload.runs), converged_after,
            self.schedule.duration, self.out_dir, self.net.tag,
        )

    def _source_for(self, term_start: Lsn, history: TermHistory) -> WalSource:
        config = ProposerConfig(
            ("ws://0.0.0.0:1",), TTID.tenant_id, TTID.timeline_id, self.config.run_bytes,
            seed=self.schedule.seed, wal_format=self.config.wal_format, wal_seg_size=SEG_SIZE,
        )
        election = Election(0, "", 0, term_start, history, term_start, {})
        return wal_source_factory(config)(election)

    async def _liveness(self) -> int:
        """A proposer run after healing: its exit status (-1: it did not end in time)."""
        with trio.move_on_after(LIVENESS_TIMEOUT):
            run = await self.workload.run_once(self._propose_argv(-1, 64 * 1024, rate=False))
            return run.rc
        return -1

    async def _verify(self) -> dict[int, int]:
        out = {}
        for i, node in self.nodes.items():
            result = await trio.run_process(
                [*python_cli(), "verify", "--node", node.http_url, "--tenant-id",
                 str(TTID.tenant_id), "--timeline-id", str(TTID.timeline_id)],
                check=False, capture_stdout=True, capture_stderr=True)
            (self.out_dir / f"verify-n{i}.txt").write_bytes(result.stdout + result.stderr)
            out[i] = result.returncode
        return out

    async def _quiet_fds(self, start: dict[int, int]) -> dict[int, int]:
        """Each node's descriptor count once it is back to its start (plus slack), or the
        last count seen when ``FD_QUIET_TIMEOUT`` runs out."""
        counts = {i: _fd_count(n) for i, n in self.nodes.items()}
        with trio.move_on_after(FD_QUIET_TIMEOUT):
            while any(counts[i] > start[i] + FD_SLACK for i in counts):
                await trio.sleep(SAMPLE_INTERVAL)
                counts = {i: _fd_count(n) for i, n in self.nodes.items()}
        return counts


def _fd_count(node: NodeProcess) -> int:
    if not node.running:
        return 0
    try:
        return len(os.listdir(f"/proc/{node.pid}/fd"))
    except FileNotFoundError:
        return 0


def _tracebacks(logs: list[Path]) -> int:
    """Tracebacks in a node's logs, over all its starts."""
    total = 0
    for log in logs:
        with contextlib.suppress(FileNotFoundError):
            total += log.read_text(errors="replace").count("Traceback")
    return total

