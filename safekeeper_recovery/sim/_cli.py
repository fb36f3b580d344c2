"""The simulator's command line: run a range of seeds, stop at the first failure."""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Iterator

from ._bugs import PLANTED_BUGS, PlantedBugs
from ._simulation import SimConfig, SimResult, run_seed

__all__ = ["main", "run_seeds"]


def _run_one(job: tuple[int, SimConfig]) -> SimResult:
    seed, cfg = job
    return run_seed(seed, cfg)


def run_seeds(seeds: range, cfg: SimConfig, *, jobs: int = 1) -> Iterator[SimResult]:
    """Results in seed order. With ``jobs > 1`` seeds run in worker processes (each seed is
    still one deterministic run); the caller may stop iterating at the first failure."""
    if jobs <= 1:
        for seed in seeds:
            yield run_seed(seed, cfg)
        return
    # Small chunks keep the workers busy to the end and the first failure close at hand.
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        yield from pool.imap(_run_one, ((seed, cfg) for seed in seeds), chunksize=2)
        # Leaving the with-block terminates workers still busy on later seeds.


def main(argv: list[str] | None = None) -> int:
    """Exit 0 if every seed passes; 1 (after printing the failure report of the lowest
    failing seed) otherwise."""
    parser = argparse.ArgumentParser(prog="python -m safekeeper_recovery.sim")
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--nodes", type=int, choices=(3, 5), default=None,
                        help="cluster size for every seed (default: 5 on every 5th seed, else 3)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--bug", choices=PLANTED_BUGS, action="append", default=[],
                        help="switch on a planted bug (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per seed")
    args = parser.parse_args(argv)
    bugs = PlantedBugs(**{b: True for b in args.bug})
    cfg = SimConfig(bugs=bugs, nodes=args.nodes)
    started = time.monotonic()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for result in run_seeds(seeds, cfg, jobs=args.jobs):
        if args.verbose:
            print(f"seed {result.seed}: {'ok' if result.ok else 'FAILED'} "
                  f"nodes={len(result.final_flush)} "
                  f"faults={','.join(result.active_faults) or '-'} "
                  f"proposers={result.proposers} terms={result.elected_terms} "
                  f"steps={result.steps}", flush=True)
        if not result.ok:
            print(result.report(), file=sys.stderr)
            return 1
    elapsed = time.monotonic() - started
    print(f"{args.seeds} seeds passed in {elapsed:.1f}s ({args.seeds / elapsed:.2f} seeds/s, "
          f"{args.jobs} job(s))")
    return 0
