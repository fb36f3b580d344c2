"""The results as a rich table and as ``docs/benchmarks.md``."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from rich.table import Table

from ._compare import Earlier, change, earlier_figures
from ._mass import MassRun, percentile
from ._run import BenchResults
from ._stats import Samples

__all__ = ["figures", "kept_sections", "load_line", "render_markdown", "render_table",
           "targets"]

KEPT_HEADING = "## Profile"


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}")


def figures(r: BenchResults) -> list[tuple[str, str, str]]:
    """(figure, median (min-max), unit) rows."""
    rows: list[tuple[str, str, str]] = []
    for s in (r.recovery, r.recovery_from_spawn, r.pull, r.pg_receivewal, r.pg_receivewal_disk,
              r.pg_port, r.disk, r.ingest):
        rows.append((s.name, s.describe(), s.unit))
    for name, s in r.ratios().items():
        rows.append((name, s.describe(".2f"), "x"))
    for s in (r.cpu_recipient, r.cpu_donor, r.cpu_pg_receivewal, r.cpu_proposer,
              r.cpu_ingest_node):
        rows.append((s.name, s.describe(".2f"), s.unit))
    rows.append((r.detect.name, r.detect.describe(".3f"), "s"))
    rows.append((r.finish.name, r.finish.describe(".3f"), "s"))
    rows.append((r.peak_rss_small.name, r.peak_rss_small.describe(), "MiB"))
    rows.append((r.peak_rss_main.name, r.peak_rss_main.describe(), "MiB"))
    rows += r.archive.rows()
    for run in r.mass:
        rows += _mass_rows(run, r.recovery)
    idle = r.idle
    if idle is not None:
        rows += [
            (f"idle CPU, {idle.timelines} timelines ({idle.window:.0f} s)",
             f"{idle.cpu_percent:.2f}", "% of a core"),
            ("start-up with them", f"{idle.startup_seconds:.2f}", "s"),
            ("RSS per timeline", f"{idle.rss_per_timeline / 1024:.1f}", "KiB"),
            ("RSS with them / empty node",
             f"{idle.rss_bytes / 2**20:.1f} / {idle.rss_empty_bytes / 2**20:.1f}", "MiB"),
            ("wake all on one peer-info batch",
             f"{idle.wake_seconds:.2f}" if idle.wake_seconds is not None
             else f"n/a ({idle.wake_error})", "s"),
        ]
    return rows


def _mass_name(run: MassRun) -> str:
    throttle = f", throttle {run.throttle}/s" if run.throttle else ", throttle off"
    return f"mass {run.scale.describe()}{throttle}"


def _ms(values: tuple[float, ...]) -> str:
    if not values:
        return "n/a"
    return "/".join(f"{1000 * percentile(values, q):.0f}" for q in (50, 99, 100))


def _mass_rows(run: MassRun, single: Samples) -> list[tuple[str, str, str]]:
    name = _mass_name(run)
    rows = [
        (f"{name}: all caught up (from node start)", f"{run.caught_up_seconds:.2f}", "s"),
        (f"{name}: aggregate", f"{run.aggregate_mb_s:.1f}", "MB/s"),
    ]
    if single.values:
        rows.append((f"{name}: aggregate ÷ single-timeline recovery",
                     f"{run.aggregate_mb_s / single.median:.2f}", "x"))
    rows += [
        (f"{name}: peak RSS", f"{run.peak_rss / 2**20:.1f}", "MiB"),
        (f"{name}: CPU, recovering node", f"{run.cpu_per_gib:.2f}", "s/GiB"),
        (f"{name}: live proposer commit latency before", _ms(run.baseline_latency),
         "ms p50/p99/max"),
        (f"{name}: live proposer commit latency during", _ms(run.latency),
         "ms p50/p99/max"),
    ]
    return rows


def load_line(r: BenchResults) -> str:
    """The load averages the run was taken under (``uptime``'s three figures)."""
    return "; ".join(f"{when} {a:.2f} {b:.2f} {c:.2f}" for when, (a, b, c) in r.load) or "n/a"


def targets(r: BenchResults) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) — ``None`` when not measured."""
    ratios = r.ratios()

    def med(s: Samples) -> float | None:
        return s.median if s.values else None

    out: list[tuple[str, str, bool | None]] = []

    def check(name: str, value: float | None, ok: bool | None, fmt: str) -> None:
        out.append((name, "n/a" if value is None else format(value, fmt),
                    None if value is None else ok))

    rec = med(ratios["recovery ÷ pg_receivewal"])
    check("recovery ÷ pg_receivewal ≥ 1.0 (goal 1.5)", rec, rec is not None and rec >= 1.0,
          ".2f")
    pull = med(ratios["pull ÷ recovery"])
    check("pull ÷ recovery ≥ 0.8", pull, pull is not None and pull >= 0.8, ".2f")
    disk = med(ratios["recovery ÷ disk limit"])
    check("recovery ÷ O_DIRECT disk limit ≥ 0.5", disk, disk is not None and disk >= 0.5,
          ".2f")
    cpu = med(r.cpu_recipient)
    check("CPU, recovering node ≤ 1.0 s/GiB", cpu, cpu is not None and cpu <= 1.0, ".2f")
    ing = med(ratios["ingest ÷ pg_receivewal"])
    check("ingest ÷ pg_receivewal ≥ 0.7", ing, ing is not None and ing >= 0.7, ".2f")
    # The walsender reads WAL from the page cache, where PostgreSQL's buffered writes left
    # it, and the node from the disk (O_DIRECT): both ways are reported, and the second
    # compares the two servers in the same I/O mode (docs/postgres-port.md).
    port = med(ratios["pg port ÷ pg_receivewal"])
    check("pg port ÷ pg_receivewal ≥ 1.0 (walsender from the page cache)", port,
          port is not None and port >= 1.0, ".2f")
    same = med(ratios["pg port ÷ pg_receivewal, both from disk"])
    check("pg port ÷ pg_receivewal ≥ 1.0 (both from disk)", same,
          same is not None and same >= 1.0, ".2f")
    d, f = med(r.detect), med(r.finish)
    check("detect latency median ≤ 0.5 s", d, d is not None and d <= 0.5, ".3f")
    check("finish latency median ≤ 1.5 s", f, f is not None and f <= 1.5, ".3f")
    if r.idle is not None:
        check(f"{r.idle.timelines} idle timelines ≤ 2 % of a core", r.idle.cpu_percent,
              r.idle.cpu_percent <= 2.0, ".2f")
        check("start-up ≤ 20 s", r.idle.startup_seconds, r.idle.startup_seconds <= 20.0,
              ".2f")
    out += r.archive.targets()
    single = med(r.recovery)
    for run in r.mass:
        if run.throttle is None:  # a throttled run is slower on purpose
            agg = None if single is None else run.aggregate_mb_s / single
            check(f"{_mass_name(run)}: aggregate ÷ single-timeline ≥ 0.8", agg,
                  agg is not None and agg >= 0.8, ".2f")
    # Peaks: the highest over the rounds, at both sizes (each size runs every round).
    big = max(r.peak_rss_main.values) if r.peak_rss_main.values else None
    small = max(r.peak_rss_small.values) if r.peak_rss_small.values else None
    check("peak RSS recovering N ≤ 200 MiB (max over rounds)", big,
          big is not None and big <= 200, ".1f")
    growth = None if big is None or not small else big / small
    check("peak RSS at N within 10 % of N/4 (max over rounds)", growth,
          growth is not None and growth <= 1.10, ".3f")
    return out


def render_table(r: BenchResults) -> tuple[Table, Table]:
    n = r.config.nbytes / 2**20
    t = Table(title=f"safekeeper-recovery benchmarks (N = {n:.0f} MiB, {r.config.rounds} "
                    "rounds)")
    t.add_column("figure")
    t.add_column("median (min-max)", justify="right")
    t.add_column("unit")
    for row in figures(r):
        t.add_row(*row)
    g = Table(title="targets")
    g.add_column("target")
    g.add_column("measured", justify="right")
    g.add_column("met")
    for name, value, ok in targets(r):
        g.add_row(name, value, {True: "[green]yes[/]", False: "[red]no[/]", None: "—"}[ok])
    return t, g


def _bytecode_cache() -> str:
    """Whether the node processes could load compiled modules: start-up figures depend on
    it (compiling the package and its dependencies costs a node about 0.6 s of CPU)."""
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return ("off (`PYTHONDONTWRITEBYTECODE` is set: each node process compiles the "
                "package again at start, unless an install compiled it)")
    return "on"


def render_markdown(r: BenchResults, command: str, notes: str = "",
                    earlier: str = "") -> str:
    """The report; ``earlier`` (an earlier report's text) adds its figures and each
    figure's change, for the stability across runs (``_compare.py``)."""
    n = r.config.nbytes / 2**20
    before = earlier_figures(earlier) if earlier else Earlier("", "", {})
    lines = [
        "# Benchmarks",
        "",
        f"- **Machine**: {_machine()}",
        f"- **Date**: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- **Command**: `{command}`",
        f"- **Load** (1/5/15-minute averages): {load_line(r)}",
        f"- **PostgreSQL** (anchor): {r.pg_version or 'n/a'}",
        f"- **Python bytecode cache**: {_bytecode_cache()}",
        f"- **N** = {n:.0f} MiB, {r.config.rounds} rounds; latency: "
        f"{r.config.latency_trials} trials of {r.config.latency_bytes / 2**20:.0f} MiB",
        "",
        "Each round runs, in an order rotated per round: node 3 recovering N bytes from a "
        "donor (real `serve` processes on loopback; timed on the node's clock from the "
        "attempt's `recovery.started_at` to its `recovery.flushed_at`, the flush that reached "
        "the donor's flush_lsn; status polled every 0.1 s); node 3 pulling the same "
        "timeline from an empty disk (`timeline pull`, timed from the pull's `started_at` to "
        "its `finished_at`, install included); `pg_receivewal` "
        "(default fsync per segment, TCP loopback, `--endpos`) streaming N bytes of real WAL "
        "from a throw-away PostgreSQL started by the benchmark (WAL made of 1 MiB "
        "`pg_logical_emit_message` records, one replication slot per round so each round "
        "streams the same bytes; its I/O: buffered writes, fsync per segment; its CPU from "
        "its own rusage); the disk limit (N bytes written the way the node writes WAL: "
        f"{r.disk_mode or 'n/a'}); the test proposer (in the "
        "benchmark process, 64 MiB window) writing N bytes to three nodes (ingest); and node "
        "3 recovering N/4 bytes, for its peak RSS (VmHWM) against the N runs'; and "
        "`pg_receivewal` streaming the same N bytes, the same way, from a safekeeper's "
        "`--listen-pg` port (one node, loaded once with the same WAL by the ingest; it reads "
        "all of it from the disk: O_DIRECT, `--wal-memory 0`); and `pg_receivewal` from "
        "PostgreSQL again, its WAL "
        "files evicted from the page cache first (`POSIX_FADV_DONTNEED`), so the walsender "
        "too reads from the disk (the plain `pg_receivewal` figure reads what PostgreSQL's "
        "buffered writes left in the page cache); these two run back to back, in an order "
        "swapped every round. Ratios "
        "are per round (same window), then median (min-max). MB = 10^6 bytes. CPU is user + "
        "system time from `/proc/<pid>/stat` per GiB moved (each ingest node counts once "
        "per round). The node writes WAL with O_DIRECT, 4 MiB writes, fdatasync per flush "
        "and per filled segment. Nodes run with their recovery throttles off "
        "(`--recovery-max-rate 0 --recovery-serve-max-rate 0`): the figures are the "
        "engine's, not its 128 MiB/s default limit's.",
        "",
        "Mass recovery (per scale, after the rounds): node 3 was down while every timeline "
        "took the lag on nodes 1 and 2; it starts and recovers them all (recovery "
        "throttles off unless a row says otherwise, at most 8 recoveries at a time). "
        "*All caught up* is from its spawn to "
        "the last timeline's `recovery.flushed_at`; *aggregate* is all lag bytes over "
        "the first attempt's `started_at` to that last flush, against the median "
        "single-timeline recovery of the same run. A live proposer on another timeline "
        "writes to all three nodes (2 MiB/s in 64 KiB pieces); each piece is timed from "
        "its release to the quorum commit, 2 s before node 3 starts and while it recovers.",
        "",
    ]
    if before.values:
        lines += [f"*Earlier run* below: the report this one replaced ({before.when}, load "
                  f"{before.load or 'not recorded'}); *change* = this median ÷ that one.",
                  "", "| figure | median (min-max) | unit | earlier run | change |",
                  "|---|---:|---|---:|---:|"]
        lines += [f"| {a} | {b} | {c} | {before.values.get(a, '')} | "
                  f"{change(b, before.values.get(a))} |" for a, b, c in figures(r)]
    else:
        lines += ["| figure | median (min-max) | unit |", "|---|---:|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in figures(r)]
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---:|---|"]
    for name, value, ok in targets(r):
        verdict = {True: "yes", False: "**no**", None: "-"}[ok]
        lines.append(f"| {name} | {value} | {verdict} |")
    if r.errors:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in r.errors]
    if notes:
        lines += ["", notes.rstrip()]
    return "\n".join(lines) + "\n"


def kept_sections(previous: str) -> str:
    """The hand-written part of an earlier report, carried over when it is regenerated.

    Everything from the ``## Profile`` heading (the profiles behind the figures and what
    limits them) to the end; ``""`` if there is none.
    """
    if previous.startswith(KEPT_HEADING + "\n"):
        return previous
    start = previous.find("\n" + KEPT_HEADING + "\n")
    return previous[start + 1 :] if start >= 0 else ""
