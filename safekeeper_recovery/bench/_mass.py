"""Mass recovery: a node that was down while many timelines took writes comes back.

Rules:

1. Setup, per scale: three real ``serve`` processes with ``timelines`` timelines (and one
   spare *live* timeline per measured run) created in every node's data dir while it is
   stopped (through the storage layer, as the HTTP create would). Nodes 1 and 2 start;
   node 3 stays down and its (empty) data dir is snapshotted; a proposer then writes
   ``lag_bytes`` to every timeline on nodes 1 and 2 (``WRITERS`` at a time).
2. A run restores node 3's snapshot, starts a *live proposer* on the run's live timeline
   (all three nodes, ``LIVE_RATE`` bytes/s in ``LIVE_PIECE`` pieces, each timed from
   release to quorum commit: ``_live.py``), lets it run ``BASELINE`` seconds alone, then
   starts node 3 and waits until every timeline's ``recovery.flushed_lsn`` reached its
   target (node 3's ``GET /v1/recovery``, polled every ``POLL`` seconds).
3. Timed on node 3's clock: *caught up* = spawn → the last timeline's ``flushed_at``;
   *aggregate MB/s* = all lag bytes ÷ (first attempt's ``started_at`` → last
   ``flushed_at``), the span the single-timeline figure is taken over too. Also node 3's
   peak RSS (VmHWM) and CPU per GiB, and the live proposer's commit latencies of pieces
   released before node 3 started (baseline) and while it recovered.
4. Every node runs with its recovery throttles off (``UNTHROTTLED``); a run given a rate
   starts node 3 with that intake limit (``--recovery-max-rate``), which through TCP flow
   control also bounds what the donors serve. Each scale runs once per rate asked for
   (``None``: off), from the same snapshot.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import attrs
import trio
from rich.console import Console

from .._console import quieted
from ..core import Lsn, TenantId, TenantTimelineId, TimelineId
from ..proposer import Proposer, ProposerConfig, WalGenerator, propose, websocket_connector
from ..testing import Cluster
from ..transport import SafekeeperClient
from ._cluster import START_LSN, UNTHROTTLED, cpu_seconds, peak_rss
from ._idle import precreate
from ._live import TimedWal

__all__ = ["MassRun", "MassScale", "measure_mass", "percentile"]

WRITERS = 16
"""Proposers writing the lag concurrently during setup."""
POLL = 0.5
"""Polling period (s) of node 3's recovery list; the figures come from its own clock."""
BASELINE = 2.0
"""Seconds the live proposer runs before node 3 starts (its undisturbed latency)."""
LIVE_RATE = 2 << 20
LIVE_PIECE = 64 << 10


@attrs.frozen
class MassScale:
    timelines: int
    lag_bytes: int
    seg_size: int
    """Segment size of the timelines: small segments keep the disk use (every open
    segment is preallocated on three nodes) near the WAL written."""

    def describe(self) -> str:
        lag = (f"{self.lag_bytes >> 20} MiB" if self.lag_bytes >= 1 << 20
               else f"{self.lag_bytes >> 10} KiB")
        return f"{self.timelines} x {lag}"


@attrs.frozen
class MassRun:
    scale: MassScale
    throttle: str | None
    """The ``--recovery-max-rate`` node 3 ran with; None: throttles off."""
    total_bytes: int
    caught_up_seconds: float
    recovery_seconds: float
    peak_rss: int
    cpu_seconds: float
    baseline_latency: tuple[float, ...]
    latency: tuple[float, ...]
    """Live proposer commit latencies (s) of pieces released while node 3 recovered."""

    @property
    def aggregate_mb_s(self) -> float:
        return self.total_bytes / 1e6 / self.recovery_seconds

    @property
    def cpu_per_gib(self) -> float:
        return self.cpu_seconds / (self.total_bytes / 2**30)


def _ttid(tenant: TenantId) -> TenantTimelineId:
    return TenantTimelineId(tenant, TimelineId(os.urandom(16)))


@attrs.define
class _MassCluster:
    root: Path
    scale: MassScale
    runs: int
    cluster: Cluster = attrs.field(init=False)
    timelines: list[TenantTimelineId] = attrs.field(init=False)
    live: list[TenantTimelineId] = attrs.field(init=False)
    targets: dict[TenantTimelineId, Lsn] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        self.cluster = Cluster(self.root / "nodes", 3, peer_timing=(), ready_timeout=120.0,
                               extra_args=UNTHROTTLED)
        # Few tenants with many timelines each, like a real deployment's fan-out.
        tenants = [TenantId(os.urandom(16)) for _ in range(max(1, self.scale.timelines // 100))]
        self.timelines = [_ttid(tenants[i % len(tenants)]) for i in range(self.scale.timelines)]
        self.live = [_ttid(tenants[0]) for _ in range(self.runs)]

    @property
    def snapshot(self) -> Path:
        return self.root / "sk3-snapshot"

    async def setup(self) -> None:
        """Rule 1."""
        for node in self.cluster.nodes.values():
            await trio.to_thread.run_sync(precreate, node.data_dir,
                                          self.timelines + self.live, self.scale.seg_size)
        await trio.to_thread.run_sync(shutil.copytree, self.cluster[3].data_dir, self.snapshot)
        await self.cluster.start([1, 2])
        urls = tuple(self.cluster[i].wal_url for i in (1, 2))
        todo = iter(self.timelines)

        async def writer() -> None:
            for ttid in todo:
                config = ProposerConfig(urls, ttid.tenant_id, ttid.timeline_id,
                                        self.scale.lag_bytes)
                result = await propose(config,
                                       websocket_connector(ttid.tenant_id, ttid.timeline_id))
                self.targets[ttid] = result.end_lsn

        # Node 3 is down on purpose: the proposers' warnings about it would bury the table.
        with quieted("safekeeper_recovery.proposer"):
            async with trio.open_nursery() as nursery:
                for _ in range(min(WRITERS, len(self.timelines))):
                    nursery.start_soon(writer)

    async def recover(self, index: int, throttle: str | None, timeout: float) -> MassRun:
        """Rules 2 and 3, with the live timeline ``self.live[index]``."""
        node3 = self.cluster[3]
        await trio.to_thread.run_sync(lambda: shutil.rmtree(node3.data_dir, ignore_errors=True))
        await trio.to_thread.run_sync(shutil.copytree, self.snapshot, node3.data_dir)
        node3.extra_args = (["--recovery-max-rate", throttle, "--recovery-serve-max-rate", "0"]
                             if throttle else list(UNTHROTTLED))
        live = self.live[index]
        total_live = int(LIVE_RATE * (timeout + BASELINE + 30))
        sources: list[TimedWal] = []
        elected = trio.Event()

        def source(election: object) -> TimedWal:
            wal = TimedWal(WalGenerator(index, total_live), START_LSN, piece=LIVE_PIECE,
                           interval=LIVE_PIECE / LIVE_RATE)
            sources.append(wal)
            elected.set()
            return wal

        proposer = Proposer(
            ProposerConfig(tuple(n.wal_url for n in self.cluster.nodes.values()),
                           live.tenant_id, live.timeline_id, total_live),
            websocket_connector(live.tenant_id, live.timeline_id), wal_source=source)
        with quieted("safekeeper_recovery.proposer"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(proposer.run)
                with trio.fail_after(30):
                    await elected.wait()  # the source is built once elected
                baseline_from = trio.current_time()
                await trio.sleep(BASELINE)  # a measurement window, not a wait for a condition
                run, spawned, done = await self._recover_all(throttle, timeout)
                nursery.cancel_scope.cancel()
        wal = sources[0]
        return attrs.evolve(run, baseline_latency=tuple(wal.latencies(baseline_from, spawned)),
                            latency=tuple(wal.latencies(spawned, done)))

    async def _recover_all(self, throttle: str | None, timeout: float
                           ) -> tuple[MassRun, float, float]:
        """Start node 3, wait for all; the run and the window on ``trio.current_time``."""
        node3 = self.cluster[3]
        spawned, spawned_trio = time.time(), trio.current_time()
        await node3.start()
        pid = node3.pid
        cpu0 = cpu_seconds(pid)
        try:
            with trio.fail_after(timeout):
                async with SafekeeperClient(node3.http_url, timeout=60.0) as client:
                    while True:
                        listing = {
                            TenantTimelineId(TenantId.parse(str(r["tenant_id"])),
                                             TimelineId.parse(str(r["timeline_id"]))): r
                            for r in await client.recovery_list()
                        }
                        done = [listing[t] for t in self.timelines
                                if t in listing and listing[t].get("flushed_lsn")
                                and Lsn.parse(str(listing[t]["flushed_lsn"]))
                                >= self.targets[t]]
                        if len(done) == len(self.timelines):
                            break
                        await trio.sleep(POLL)
            done_trio = trio.current_time()
            peak, cpu = peak_rss(pid), cpu_seconds(pid) - cpu0
        finally:
            await node3.stop()
        last = max(float(str(r["flushed_at"])) for r in done)
        first = min(float(str(r["started_at"])) for r in done)
        total = sum(int(self.targets[t]) - int(START_LSN) for t in self.timelines)
        return (MassRun(self.scale, throttle, total, last - spawned, last - first, peak, cpu,
                        (), ()), spawned_trio, done_trio)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.cluster.aclose()


async def measure_mass(root: Path, scale: MassScale, throttles: list[str | None],
                       console: Console, timeout: float = 300.0) -> list[MassRun]:
    """One setup (rule 1), then one run per entry of ``throttles`` (rule 4: ``None`` is
    throttle off). Everything under ``root`` is the caller's to remove."""
    mass = _MassCluster(root, scale, len(throttles))
    try:
        t0 = time.perf_counter()
        await mass.setup()
        console.print(f"    wrote {scale.describe()} to nodes 1 and 2 in "
                      f"{time.perf_counter() - t0:.1f} s")
        runs = []
        for i, throttle in enumerate(throttles):
            runs.append(await mass.recover(i, throttle, timeout))
        return runs
    finally:
        await mass.aclose()


def percentile(values: tuple[float, ...], q: float) -> float:
    """The nearest-rank ``q``-th percentile (``nan`` without values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
