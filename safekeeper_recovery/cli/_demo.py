"""``demo``: three nodes on loopback; node 3 misses WAL and recovers it from a peer.
``demo --postgres``: a PostgreSQL primary fails over to a standby streaming from the nodes,
and loses no acknowledged commit."""

from __future__ import annotations

import shutil
import sys

import click
import trio
from rich.console import Console

from .._console import make_console, quieted
from ..demo import (
    cleanup,
    demo_root,
    pg_demo_root,
    print_failover_summary,
    print_summary,
    run_demo,
    run_postgres_demo,
)
from ._main import main
from ._options import DURATION, SIZE

__all__ = ["demo"]


@main.command()
@click.option("--bytes", "nbytes", type=SIZE, default="256MiB", show_default=True,
              help="How much WAL node 3 misses and recovers (units: KiB, MiB, GiB).")
@click.option("--keep", is_flag=True, help="Keep the nodes' data directories and logs.")
@click.option("--postgres", is_flag=True,
              help="The PostgreSQL failover demo instead (needs PostgreSQL 15's server and "
              "client programs: initdb, pg_ctl, pgbench, pg_basebackup).")
@click.option("--load-time", type=DURATION, default="5s", show_default=True,
              help="With --postgres: how long pgbench runs before the primary is killed.")
def demo(nbytes: int, keep: bool, postgres: bool, load_time: float) -> None:
    """Start three nodes, write WAL while node 3 is down, watch node 3 recover it from a
    peer, and compare digests fetched from each node. Exits 0 only if all three match.

    With --postgres: a throw-away PostgreSQL primary commits synchronously into the three
    nodes (through the ingest), a standby streams from the nodes' pg ports, pgbench runs,
    the primary is killed with kill -9, `sync` commits what a quorum holds, and the standby
    catches up and is promoted. Exits 0 only if it holds every acknowledged transaction.
    """
    console = make_console()
    ctx = click.get_current_context()
    given = {name for name in ("nbytes", "load_time")
             if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)}
    if postgres:
        if "nbytes" in given:
            raise click.UsageError("--bytes is for the recovery demo, not --postgres")
        _postgres_demo(console, keep, load_time)
        return
    if "load_time" in given:
        raise click.UsageError("--load-time needs --postgres")
    # Node 3 is down on purpose while the proposer writes: its "unavailable" warnings are
    # expected here and would only bury the demo's own output.
    root, keep = demo_root(keep)
    try:
        with quieted("safekeeper_recovery.proposer"):
            result = trio.run(lambda: run_demo(nbytes, root=root, console=console))
    except Exception as e:
        console.print(f"[red]demo failed:[/] {e}")
        cleanup(root, True, console)
        sys.exit(1)
    print_summary(result, console)
    cleanup(root, keep, console, result.ttid)
    sys.exit(0 if result.ok else 1)


def _postgres_demo(console: Console, keep: bool, load_time: float) -> None:
    if shutil.which("pg_config") is None:
        raise click.ClickException("demo --postgres needs PostgreSQL (pg_config not found)")
    root = pg_demo_root()
    try:
        result = trio.run(lambda: run_postgres_demo(root=root, console=console,
                                                    load_seconds=load_time))
    except Exception as e:
        console.print(f"[red]demo failed:[/] {e}")
        console.print(f"Kept {root} (servers' and nodes' logs) to look into.")
        sys.exit(1)
    print_failover_summary(result, console)
    if keep:
        console.print(f"Kept the servers' and nodes' data and logs under {root} "
                      "(everything is stopped).")
    else:
        shutil.rmtree(root, ignore_errors=True)
        console.print(f"Removed {root}: run `safekeeper-recovery demo --postgres --keep` to "
                      "keep the servers' and nodes' data and logs.")
    sys.exit(0 if result.ok else 1)
