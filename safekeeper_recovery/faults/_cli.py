"""``python -m safekeeper_recovery.faults --runs N --seed S``: seeds S .. S+N-1, one
schedule each, stopping at the first failure with its replay command."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import trio

from ._campaign import CampaignConfig, RunResult, run_schedule
from ._network import unavailable_reason
from ._report import replay_command, write_report
from ._schedule import KINDS, FaultKind, plan

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m safekeeper_recovery.faults")
    p.add_argument("--runs", type=int, default=1, help="how many schedules (seeds)")
    p.add_argument("--seed", type=int, default=0, help="the first seed")
    p.add_argument("--nodes", type=int, default=3, choices=(3, 5))
    p.add_argument("--duration", type=float, default=60.0, help="seconds of faults per run")
    p.add_argument("--rate", type=int, default=256 * 1024, help="workload bytes per second")
    p.add_argument("--wal-format", choices=("random", "pg"), default="random")
    p.add_argument("--kinds", default=",".join(KINDS),
                   help=f"comma-separated fault kinds (default: all of {','.join(KINDS)})")
    p.add_argument("--out", type=Path, default=Path("faults-out"),
                   help="runs go to OUT/seed-S/ (logs, report.md, timeline.png)")
    p.add_argument("--keep-data", action="store_true", help="keep data dirs of clean runs")
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit 0 if every run is clean, 1 at the first failure (after its replay command),
    2 if this machine cannot run the campaign."""
    args = _parser().parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"Error: cannot run the fault campaign: {reason}", file=sys.stderr)
        return 2
    kinds: tuple[FaultKind, ...] = tuple(k for k in KINDS if k in args.kinds.split(","))
    extra = "" if args.kinds == ",".join(KINDS) else f" --kinds {args.kinds}"
    extra += f" --rate {args.rate} --wal-format {args.wal_format}"
    config = CampaignConfig(rate=args.rate, wal_format=args.wal_format,
                            keep_data=args.keep_data)
    results: list[RunResult] = []
    for seed in range(args.seed, args.seed + args.runs):
        schedule = plan(seed, nodes=args.nodes, duration=args.duration, kinds=kinds)
        began = time.monotonic()
        result = trio.run(run_schedule, schedule, config, args.out / f"seed-{seed}")
        report = write_report(result, extra)
        results.append(result)
        print(f"seed {seed}: {'clean' if result.ok else 'FAILED'} in "
              f"{time.monotonic() - began:.0f}s, {len(schedule.faults)} faults, "
              f"{result.committed_bytes / 2**20:.1f} MiB committed and checked "
              f"({result.workload_bytes / 2**20:.1f} under faults), converged "
              f"{_secs(result.converged_after)} after healing; {report}", flush=True)
        if not result.ok:
            for v in result.violations:
                print(f"  {v}")
            print(f"replay: {replay_command(result, extra)}")
            break
    _totals(results)
    return 0 if all(r.ok for r in results) else 1


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}s"


def _totals(results: list[RunResult]) -> None:
    kinds: Counter[str] = Counter()
    for r in results:
        kinds.update(r.schedule.counts())
    times = [r.converged_after for r in results if r.converged_after is not None]
    print(f"{sum(r.ok for r in results)}/{len(results)} runs clean; faults injected: "
          f"{dict(sorted(kinds.items()))}; committed and checked: "
          f"{sum(r.committed_bytes for r in results) / 2**20:.1f} MiB; convergence "
          + (f"median {statistics.median(times):.2f}s, max {max(times):.2f}s" if times else "-"))
