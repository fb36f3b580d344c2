"""The demo: three real nodes on loopback, node 3 misses WAL and recovers it from a peer.

Steps: start three nodes (temporary dirs, free ports); create one timeline on all three;
stop node 3; propose WAL to the quorum {1, 2}; start node 3 and follow its recovery with a
progress bar; then fetch a digest from each node separately and compare. Exit status 0 only
if all three digests match.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import attrs
import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .._console import BinaryRateColumn
from ..core import Lsn, TenantId, TenantTimelineId, TimelineId
from ..testing import Cluster

__all__ = ["DemoResult", "run_demo"]

START_LSN = Lsn.parse("0/1000000")


@attrs.frozen
class DemoResult:
    bytes: int
    seconds: float
    """From spawning node 3 to its flush reaching the end: process start-up included."""
    donor: int | None
    end_lsn: Lsn
    digests: dict[int, str]
    attempt_seconds: float | None = None
    """The recovery attempt alone, on node 3's clock: from ``recovery.started_at`` (donor
    chosen, term adopted, streaming begins) to ``recovery.flushed_at``; None if the node
    did not report both."""
    ttid: TenantTimelineId | None = None

    @property
    def ok(self) -> bool:
        return len(set(self.digests.values())) == 1 and len(self.digests) == 3

    @property
    def mib_per_s(self) -> float:
        return self.bytes / 2**20 / self.seconds if self.seconds > 0 else float("inf")

    @property
    def attempt_mib_per_s(self) -> float | None:
        if self.attempt_seconds is None:
            return None
        return self.bytes / 2**20 / self.attempt_seconds if self.attempt_seconds > 0 else None


async def run_demo(nbytes: int, *, root: Path, console: Console, timeout: float = 600.0
                   ) -> DemoResult:
    """Run the scenario under ``root``; raise on any failure (with the nodes' log tails)."""
    from ..proposer import ProposerConfig, propose, websocket_connector, websocket_fetcher
    from ..transport import SafekeeperClient

    cluster = Cluster(root, 3, peer_timing=(), ready_timeout=30.0)  # production timing
    ttid = TenantTimelineId(TenantId(os.urandom(16)), TimelineId(os.urandom(16)))
    try:
        with trio.fail_after(timeout):
            console.print(f"[bold]Starting 3 nodes[/] under {root}")
            for node in cluster.nodes.values():
                await node.start()
                console.print(f"  node {node.node_id}: {node.http_url}  {node.wal_url}")
            for node in cluster.nodes.values():
                async with SafekeeperClient(node.http_url) as client:
                    await client.create_timeline(ttid, start_lsn=START_LSN)
            console.print(f"Created timeline [cyan]{ttid}[/] on all three at {START_LSN}")

            await cluster[3].stop()
            console.print("Stopped node 3; writing WAL to the quorum {1, 2} …")
            urls = tuple(n.wal_url for n in cluster.nodes.values())
            written = await propose(
                # PostgreSQL-format WAL (as `propose` writes), so `verify` can check it.
                ProposerConfig(urls, ttid.tenant_id, ttid.timeline_id, nbytes,
                               wal_format="pg", wal_seg_size=16 * 2**20),
                websocket_connector(ttid.tenant_id, ttid.timeline_id),
                fetch_wal=websocket_fetcher(ttid.tenant_id, ttid.timeline_id),
            )
            console.print(f"  proposer: {written.summary()}")
            async with SafekeeperClient(cluster[1].http_url) as client:
                target = Lsn.parse(str((await client.timeline_status(ttid))["flush_lsn"]))

            console.print("Starting node 3: it recovers the missing WAL from a peer")
            t0 = time.monotonic()
            await cluster[3].start()
            donor, attempt_seconds = await _follow_recovery(cluster[3].http_url, ttid,
                                                            target, console)
            seconds = time.monotonic() - t0

            digests: dict[int, str] = {}
            for node in cluster.nodes.values():
                async with SafekeeperClient(node.http_url) as client:
                    digests[node.node_id] = await client.digest(ttid, START_LSN, target)
            return DemoResult(int(target) - int(START_LSN), seconds, donor, target, digests,
                              attempt_seconds, ttid)
    except BaseException:
        for node in cluster.nodes.values():
            console.print(f"[dim]--- node {node.node_id} log tail ---\n{node.tail_log()}[/]")
        raise
    finally:
        with trio.CancelScope(shield=True):
            await cluster.aclose()


async def _follow_recovery(http_url: str, ttid: TenantTimelineId, target: Lsn,
                           console: Console) -> tuple[int | None, float | None]:
    """Show node 3's progress until its flush reaches ``target``; return the donor and the
    attempt's duration on the node's clock (see ``DemoResult.attempt_seconds``)."""
    from ..transport import SafekeeperClient

    total = int(target) - int(START_LSN)
    donor: int | None = None
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        BinaryRateColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("node 3 recovering", total=total)
        async with SafekeeperClient(http_url) as client:
            while True:
                status = await client.timeline_status(ttid)
                flush = Lsn.parse(str(status["flush_lsn"]))
                recovery = status.get("recovery")
                if isinstance(recovery, dict) and recovery.get("donor") is not None:
                    donor = int(recovery["donor"])
                progress.update(task, completed=int(flush) - int(START_LSN))
                if flush >= target:
                    return donor, _attempt_seconds(recovery)
                await trio.sleep(0.1)


def _attempt_seconds(recovery: object) -> float | None:
    if not isinstance(recovery, dict):
        return None
    started, flushed = recovery.get("started_at"), recovery.get("flushed_at")
    if isinstance(started, int | float) and isinstance(flushed, int | float):
        return max(0.0, float(flushed) - float(started))
    return None


def print_summary(result: DemoResult, console: Console) -> None:
    table = Table(title="peer recovery demo")
    table.add_column("node")
    table.add_column("sha256 of [start, end)")
    for node, digest in sorted(result.digests.items()):
        table.add_row(str(node), digest)
    console.print(table)
    verdict = "[green]all three match[/]" if result.ok else "[red]MISMATCH[/]"
    attempt = ""
    if result.attempt_seconds is not None and result.attempt_mib_per_s is not None:
        attempt = (f"streamed in {result.attempt_seconds:.2f} s "
                   f"({result.attempt_mib_per_s:.1f} MiB/s), ")
    console.print(
        f"recovered {result.bytes / 2**20:.1f} MiB from donor {result.donor}: {attempt}"
        f"caught up {result.seconds:.2f} s after node 3 was started "
        f"({result.mib_per_s:.1f} MiB/s with process start-up); end {result.end_lsn}; "
        f"digests: {verdict}"
    )


def demo_root(keep: bool) -> tuple[Path, bool]:
    root = Path(tempfile.mkdtemp(prefix="safekeeper-demo-"))
    return root, keep


def cleanup(root: Path, keep: bool, console: Console,
            ttid: TenantTimelineId | None = None) -> None:
    """Remove ``root`` unless ``keep``; either way say so, and what to try next."""
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
        console.print(f"Removed {root} (the nodes' data and logs): run `safekeeper-recovery "
                      "demo --keep` to keep it and look inside with `verify` and "
                      "`timeline status`.")
        return
    console.print(f"Kept the nodes' data and logs under {root} (the nodes are stopped).")
    if ttid is None:
        return
    ids = f"--tenant-id {ttid.tenant_id} --timeline-id {ttid.timeline_id}"
    console.print(
        "Next steps:\n"
        f"  safekeeper-recovery verify --data-dir {root}/sk3/data {ids}\n"
        f"  safekeeper-recovery serve --node-id 3 --data-dir {root}/sk3/data "
        "--listen-http 127.0.0.1:7678 --listen-wal 127.0.0.1:5456 &\n"
        f"  safekeeper-recovery timeline status --node http://127.0.0.1:7678 {ids}",
        highlight=False,
    )
