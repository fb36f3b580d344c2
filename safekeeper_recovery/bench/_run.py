"""The benchmark run: anchors and the safekeeper interleaved, several rounds, one window.

Per round, in an order rotated each round (so no figure always runs first or last):
node 3 recovering N bytes from a donor; node 3 pulling the same timeline from an empty
disk (``_pull.py``); ``pg_receivewal`` streaming N bytes of real WAL from PostgreSQL's page
cache (``_postgres.py``); the disk limit (N bytes written the way the node writes WAL:
``_disk.py``); a proposer writing N bytes to three nodes; node 3 recovering N/4 bytes (its
peak RSS); and, back to back in an order swapped every round, ``pg_receivewal`` streaming
the same N bytes from a safekeeper's pg port (``_pgport``) and from PostgreSQL with its WAL
evicted from the page cache (the same I/O mode as the node's).
Then the latency trials, the mass recoveries (``_mass.py``) and the idle-cost run.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import trio
from rich.console import Console

from ._archive import ArchiveFigures, archive_round
from ._cluster import BenchCluster
from ._disk import write_segments
from ._idle import IdleResult, measure_idle
from ._mass import MassRun, MassScale, measure_mass
from ._pgport import PgPortBench
from ._postgres import PostgresServer
from ._pull import measure_pull
from ._stats import Samples, ratio

__all__ = ["QUICK_MASS_SCALES", "BenchConfig", "BenchResults", "run_benchmarks"]

MB = 1e6


@attrs.frozen
class BenchConfig:
    nbytes: int = 1 << 30
    rounds: int = 3
    latency_trials: int = 10
    latency_bytes: int = 1 << 20
    idle_timelines: int = 10_000
    idle_window: float = 30.0
    mass_scales: tuple[MassScale, ...] = (
        MassScale(200, 8 << 20, 4 << 20), MassScale(1000, 256 << 10, 1 << 20))
    throttle_rate: str = "64MiB"
    """``--recovery-max-rate`` of the throttled mass recoveries."""
    keep: bool = False
    archive: bool = True
    """Run the WAL lifecycle figures (``_archive.py``) each round."""


QUICK_MASS_SCALES = (MassScale(20, 2 << 20, 1 << 20), MassScale(100, 64 << 10, 1 << 20))


@attrs.define
class BenchResults:
    config: BenchConfig
    recovery: Samples = attrs.Factory(lambda: Samples("recovery", "MB/s"))
    pull: Samples = attrs.Factory(lambda: Samples("pull (bootstrap from peers)", "MB/s"))
    recovery_from_spawn: Samples = attrs.Factory(
        lambda: Samples("recovery incl. process start", "MB/s"))
    pg_receivewal: Samples = attrs.Factory(lambda: Samples("pg_receivewal", "MB/s"))
    pg_receivewal_disk: Samples = attrs.Factory(
        lambda: Samples("pg_receivewal, server's WAL read from disk", "MB/s"))
    pg_port: Samples = attrs.Factory(
        lambda: Samples("pg_receivewal from a safekeeper's pg port", "MB/s"))
    disk: Samples = attrs.Factory(lambda: Samples("disk limit (O_DIRECT)", "MB/s"))
    disk_mode: str = ""
    ingest: Samples = attrs.Factory(lambda: Samples("ingest (propose to 3)", "MB/s"))
    cpu_recipient: Samples = attrs.Factory(
        lambda: Samples("CPU, recovering node", "s/GiB"))
    cpu_donor: Samples = attrs.Factory(lambda: Samples("CPU, donors", "s/GiB"))
    cpu_pg_receivewal: Samples = attrs.Factory(lambda: Samples("CPU, pg_receivewal", "s/GiB"))
    cpu_proposer: Samples = attrs.Factory(lambda: Samples("CPU, ingest proposer", "s/GiB"))
    cpu_ingest_node: Samples = attrs.Factory(
        lambda: Samples("CPU, ingest node (each)", "s/GiB"))
    detect: Samples = attrs.Factory(lambda: Samples("detect latency", "s"))
    finish: Samples = attrs.Factory(lambda: Samples("finish latency", "s"))
    peak_rss_small: Samples = attrs.Factory(lambda: Samples("peak RSS, N/4", "MiB"))
    peak_rss_main: Samples = attrs.Factory(lambda: Samples("peak RSS, N", "MiB"))
    idle: IdleResult | None = None
    archive: ArchiveFigures = attrs.Factory(ArchiveFigures)
    mass: list[MassRun] = attrs.Factory(list)
    load: list[tuple[str, tuple[float, float, float]]] = attrs.Factory(list)
    """(when, 1/5/15-minute load averages) at the start and the end of the run."""
    pg_version: str = ""
    errors: list[str] = attrs.Factory(list)

    def ratios(self) -> dict[str, Samples]:
        return {
            "recovery ÷ pg_receivewal": ratio(self.recovery, self.pg_receivewal),
            "recovery ÷ disk limit": ratio(self.recovery, self.disk),
            "pull ÷ recovery": ratio(self.pull, self.recovery),
            "ingest ÷ pg_receivewal": ratio(self.ingest, self.pg_receivewal),
            "ingest ÷ disk limit": ratio(self.ingest, self.disk),
            "pg port ÷ pg_receivewal": ratio(self.pg_port, self.pg_receivewal),
            "pg port ÷ pg_receivewal, both from disk": ratio(self.pg_port,
                                                             self.pg_receivewal_disk),
            "pg_receivewal ÷ disk limit": ratio(self.pg_receivewal, self.disk),
        }


async def run_benchmarks(config: BenchConfig, console: Console) -> BenchResults:
    """Run everything under a temporary directory (removed unless ``keep``)."""
    root = Path(tempfile.mkdtemp(prefix="safekeeper-bench-"))
    results = BenchResults(config)
    results.load.append(("start", os.getloadavg()))
    n = config.nbytes
    pg = PostgresServer(root / "pg", rounds=config.rounds)
    bench = BenchCluster.plan(root)
    pgport = PgPortBench(root, pg)
    try:
        console.print(f"[bold]Setting up[/] under {root}: PostgreSQL with {n / 2**20:.0f} MiB "
                      "of WAL, three nodes with donors holding the same amount")
        await pg.start()
        await pgport.reserve()
        await pg.make_wal(n)
        results.pg_version = await pg.sql("SHOW server_version")
        await bench.setup(n, n // 4)
        console.print("  loading the same WAL into a node with a pg port (ingest)")
        await pgport.load()

        async def recovery(_: int) -> None:
            run = await bench.recover(bench.main)
            results.recovery.add(run.bytes / MB / run.seconds)
            results.recovery_from_spawn.add(run.bytes / MB / run.seconds_from_start)
            results.peak_rss_main.add(run.peak_rss / 2**20)
            gib = run.bytes / 2**30
            results.cpu_recipient.add(run.recipient_cpu / gib)
            results.cpu_donor.add(run.donor_cpu / gib)

        async def receivewal(i: int) -> None:
            seconds, cpu = await pg.stream(i, root / "receivewal")
            results.pg_receivewal.add(n / MB / seconds)
            results.cpu_pg_receivewal.add(cpu / (n / 2**30))

        async def receivewal_disk(i: int) -> None:
            seconds, _cpu = await pg.stream(i, root / "receivewal", from_disk=True)
            results.pg_receivewal_disk.add(n / MB / seconds)

        async def pg_port(_: int) -> None:
            results.pg_port.add(n / MB / await pgport.stream(root / "receivewal-pgport"))

        async def pg_port_and_disk_anchor(i: int) -> None:
            # The two compared in the same I/O mode run back to back, in an order swapped
            # every round: whichever runs second shares the disk with the first one's
            # writes still going out, and a fixed order would favour one of them.
            pair = [pg_port, receivewal_disk]
            for step in pair if i % 2 == 0 else pair[::-1]:
                await step(i)

        async def disk(_: int) -> None:
            run = await trio.to_thread.run_sync(write_segments, root / "disk", n)
            results.disk.add(n / MB / run.seconds)
            results.disk_mode = run.mode

        async def ingest(_: int) -> None:
            run = await bench.ingest(n)
            results.ingest.add(n / MB / run.seconds)
            results.cpu_proposer.add(run.proposer_cpu / (n / 2**30))
            for node_cpu in run.node_cpu:
                results.cpu_ingest_node.add(node_cpu / (n / 2**30))

        async def pull(_: int) -> None:
            run = await measure_pull(bench, bench.main)
            results.pull.add(run.bytes / MB / run.seconds)

        async def memory(_: int) -> None:
            small = await bench.recover(bench.small)
            results.peak_rss_small.add(small.peak_rss / 2**20)

        # Peak RSS is a maximum over a run, and it depends on whether the bounded queues
        # happened to fill: the N/4 run is repeated every round like the N run, so the
        # two maxima compared are taken over as many runs (one N/4 run against three N
        # runs read 1.23x in a run whose medians differed by 3 %).
        steps: list[tuple[str, Callable[[int], Awaitable[None]]]] = [
            ("recovery", recovery), ("pull", pull), ("pg_receivewal", receivewal),
            ("disk limit", disk), ("ingest", ingest),
            (f"memory: recovering {n // 4 / 2**20:.0f} MiB", memory),
            ("pg_receivewal from the pg port and from PostgreSQL's WAL read from disk",
             pg_port_and_disk_anchor),
        ]
        if config.archive:
            steps.append(("archive: ingest with and without archive + removal",
                          lambda i: archive_round(root / "lifecycle", n, results.archive, i)))
        for r in range(config.rounds):
            order = steps[r % len(steps):] + steps[:r % len(steps)]
            for name, step in order:
                console.print(f"  round {r + 1}/{config.rounds}: {name}")
                await step(r)

        console.print(f"  latency: {config.latency_trials} trials of "
                      f"{config.latency_bytes / 2**20:.0f} MiB")
        for trial in await bench.latency(config.latency_trials, config.latency_bytes):
            results.detect.add(trial.detect)
            results.finish.add(trial.finish)
        await bench.stop()
        await pgport.stop()
        await pg.stop()

        for i, scale in enumerate(config.mass_scales):
            console.print(f"  mass recovery: {scale.describe()}, throttle off and "
                          f"{config.throttle_rate}/s")
            results.mass += await measure_mass(root / f"mass{i}", scale,
                                               [None, config.throttle_rate], console)
            if not config.keep:  # up to GBs of preallocated segments on three nodes
                await trio.to_thread.run_sync(
                    functools.partial(shutil.rmtree, root / f"mass{i}", ignore_errors=True))

        console.print(f"  idle: {config.idle_timelines} timelines on one node")
        results.idle = await measure_idle(root / "idle", config.idle_timelines,
                                          config.idle_window, console)
        results.load.append(("end", os.getloadavg()))
        return results
    finally:
        with trio.CancelScope(shield=True):
            await bench.stop()
            await pgport.stop()
            # Already stopped (or never started): nothing to clean up.
            with contextlib.suppress(RuntimeError):
                await pg.stop()
        if config.keep:
            console.print(f"Kept everything under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
