"""``demo``: three nodes on loopback; node 3 misses WAL and recovers it from a peer."""

from __future__ import annotations

import sys

import click
import trio

from .._console import make_console, quieted
from ..demo import cleanup, demo_root, print_summary, run_demo
from ._main import main
from ._options import SIZE

__all__ = ["demo"]


@main.command()
@click.option("--bytes", "nbytes", type=SIZE, default="256MiB", show_default=True,
              help="How much WAL node 3 misses and recovers (units: KiB, MiB, GiB).")
@click.option("--keep", is_flag=True, help="Keep the nodes' data directories and logs.")
def demo(nbytes: int, keep: bool) -> None:
    """Start three nodes, write WAL while node 3 is down, watch node 3 recover it from a
    peer, and compare digests fetched from each node. Exits 0 only if all three match."""
    console = make_console()
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
