"""``bench``: throughput, latency, idle cost and memory figures, written to docs/benchmarks.md."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import trio

from .._console import make_console, quieted
from ..bench import BenchConfig, kept_sections, render_markdown, render_table, run_benchmarks
from ._main import main

__all__ = ["bench"]


@main.command()
@click.option("--quick", is_flag=True,
              help="N = 256 MiB and a 10 s idle window (unless --gib is given).")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 20),
              help="Interleaved rounds of recovery / pg_receivewal / disk / ingest.")
@click.option("--gib", default=None, type=float,
              help="N in GiB: WAL per throughput round [1; --quick: 0.25].")
@click.option("--output", default="docs/benchmarks.md", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the markdown report ('-': nowhere).")
@click.option("--keep", is_flag=True, help="Keep the data directories and logs.")
def bench(quick: bool, rounds: int, gib: float | None, output: Path, keep: bool) -> None:
    """Run the benchmarks (several minutes): needs PostgreSQL's binaries (pg_config)."""
    console = make_console()
    nbytes = int((gib if gib is not None else (0.25 if quick else 1.0)) * 2**30)
    config = BenchConfig(nbytes=nbytes, rounds=rounds, idle_window=10.0 if quick else 30.0,
                         keep=keep)
    try:
        with quieted("safekeeper_recovery.proposer"):  # nodes are down on purpose
            results = trio.run(run_benchmarks, config, console)
    except Exception as e:
        console.print(f"[red]bench failed:[/] {e}")
        sys.exit(1)
    for table in render_table(results):
        console.print(table)
    if str(output) != "-":
        command = "safekeeper-recovery bench" + "".join(f" {a}" for a in sys.argv[2:])
        output.parent.mkdir(parents=True, exist_ok=True)
        kept = kept_sections(output.read_text()) if output.exists() else ""  # the profile notes
        output.write_text(render_markdown(results, command, kept))
        console.print(f"wrote {output}")


