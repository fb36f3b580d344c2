"""``bench``: throughput, latency, idle cost and memory figures, written to docs/benchmarks.md."""

from __future__ import annotations

import sys
from pathlib import Path

import attrs
import click
import trio
from rich.markup import escape

from .._console import make_console, quieted
from ..bench import (
    QUICK_MASS_SCALES,
    BenchConfig,
    kept_sections,
    render_markdown,
    render_table,
    run_benchmarks,
)
from ..core import leaves
from ._main import main

__all__ = ["bench", "report_path"]


REPORT = Path("docs/benchmarks.md")


def report_path(quick: bool, output: Path | None) -> Path | None:
    """Where the report goes: ``--output`` if given (``-``: nowhere), else the committed
    report for a full run and nowhere for a quick one (its figures are not comparable)."""
    if output is None:
        return None if quick else REPORT
    return None if str(output) == "-" else output


@main.command()
@click.option("--quick", is_flag=True,
              help="N = 256 MiB (unless --gib is given), small mass recoveries, a 10 s idle "
                   "window; writes no report unless --output is given.")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 20),
              help="Interleaved rounds of recovery / pg_receivewal / disk / ingest.")
@click.option("--gib", default=None, type=float,
              help="N in GiB: WAL per throughput round [1; --quick: 0.25].")
@click.option("--output", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the markdown report ('-': nowhere) [full run: "
                   f"{REPORT}; --quick: nowhere].")
@click.option("--keep", is_flag=True, help="Keep the data directories and logs.")
def bench(quick: bool, rounds: int, gib: float | None, output: Path | None,
          keep: bool) -> None:
    """Run the benchmarks (several minutes): needs PostgreSQL's binaries (pg_config).

    A full run replaces docs/benchmarks.md (keeping its hand-written "## Profile" part,
    and showing the replaced run's figures next to the new ones); a quick run's figures
    are not comparable with a full run's, so it writes no report unless --output names
    one."""
    console = make_console()
    nbytes = int((gib if gib is not None else (0.25 if quick else 1.0)) * 2**30)
    output = report_path(quick, output)
    config = BenchConfig(nbytes=nbytes, rounds=rounds, idle_window=10.0 if quick else 30.0,
                         keep=keep)
    if quick:
        config = attrs.evolve(config, mass_scales=QUICK_MASS_SCALES)
    try:
        with quieted("safekeeper_recovery.proposer"):  # nodes are down on purpose
            results = trio.run(run_benchmarks, config, console)
    except Exception as e:
        # The errors themselves, not "Exceptions from Trio nursery (1 sub-exception)".
        for error in leaves(e):
            console.print(f"[red]bench failed:[/] {escape(f'{type(error).__name__}: {error}')}")
        sys.exit(1)
    for table in render_table(results):
        console.print(table)
    if output is not None:
        command = "safekeeper-recovery bench" + "".join(f" {a}" for a in sys.argv[2:])
        output.parent.mkdir(parents=True, exist_ok=True)
        earlier = output.read_text() if output.exists() else ""
        output.write_text(render_markdown(results, command, kept_sections(earlier), earlier))
        console.print(f"wrote {output}")


