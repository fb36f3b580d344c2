"""``demo --postgres``: three nodes, a throw-away PostgreSQL primary committing
synchronously into them, a standby streaming from them, pgbench, ``kill -9`` of the primary,
``sync``, promotion, and the count of what survived (the scenario is ``_failover``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..core import TenantId, TenantTimelineId, TimelineId
from ..testing import Cluster
from ._failover import FailoverResult, run_failover

__all__ = ["pg_demo_root", "print_failover_summary", "run_postgres_demo"]


def pg_demo_root() -> Path:
    """A fresh directory the ``postgres`` server user can reach (PostgreSQL runs as it)."""
    root = Path(tempfile.mkdtemp(prefix="safekeeper-pg-demo-"))
    os.chmod(root, 0o777)
    return root


async def run_postgres_demo(*, root: Path, console: Console, load_seconds: float
                            ) -> FailoverResult:
    """Run the failover once under ``root``; raise on any failure (with the nodes' logs)."""
    cluster = Cluster(root / "cluster", 3, peer_timing=(), ready_timeout=30.0, pg=True)
    ttid = TenantTimelineId(TenantId(os.urandom(16)), TimelineId(os.urandom(16)))
    try:
        console.print(f"[bold]Starting 3 nodes[/] under {root}")
        await cluster.start()
        for node in cluster.nodes.values():
            console.print(f"  node {node.node_id}: {node.http_url}  {node.wal_url}  "
                          f"pg port {node.pg_port}", highlight=False)
        bar = _LoadBar(console, load_seconds)

        def say(text: str) -> None:
            bar.close()  # the load is over when the next step speaks
            console.print(text, highlight=False)

        try:
            return await run_failover(cluster, ttid, root, load_seconds=load_seconds,
                                      say=say, on_load=bar.tick)
        finally:
            bar.close()
    except BaseException:
        for node in cluster.nodes.values():
            console.print(f"[dim]--- node {node.node_id} log tail ---\n{node.tail_log()}[/]")
        raise
    finally:
        await cluster.aclose()


class _LoadBar:
    """A progress bar over the load's seconds, with the acknowledged commits so far."""

    def __init__(self, console: Console, seconds: float) -> None:
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                  TimeRemainingColumn(), console=console)
        self._seconds = seconds
        self._task: TaskID | None = None
        self._closed = False

    def tick(self, elapsed: float, acknowledged: int) -> None:
        if self._closed:
            return
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task("load", total=self._seconds)
        self._progress.update(self._task, completed=elapsed,
                              description=f"load: {acknowledged} commits acknowledged")

    def close(self) -> None:
        if self._task is not None and not self._closed:
            self._progress.stop()
        self._closed = self._task is not None or self._closed


def print_failover_summary(result: FailoverResult, console: Console) -> None:
    table = Table(title="zero-loss failover", title_justify="left")
    for name in ("transactions", "acknowledged by the primary", "on the promoted standby"):
        table.add_column(name)
    table.add_row("counting client", str(result.acknowledged), str(result.client_rows))
    if result.pgbench_processed is not None:
        table.add_row("pgbench", str(result.pgbench_processed), str(result.pgbench_rows))
    console.print(table)
    extra = result.client_rows - (result.acknowledged - result.missing)
    verdict = ("[green]every acknowledged transaction is there[/]" if result.ok else
               f"[red]LOST {result.lost} acknowledged transactions[/]")
    note = (" (1 more client row: its commit was in flight at the kill, durable on the "
            "quorum but never acknowledged)" if extra == 1 else "")
    console.print(
        f"sync committed {result.commit_lsn}; the standby was promoted "
        f"{result.seconds:.2f} s after the kill; {verdict}{note}", highlight=False)
