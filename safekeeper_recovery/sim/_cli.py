"""The simulator's command line: run a range of seeds, stop at the first failure."""

from __future__ import annotations

import argparse
import sys
import time

from ._bugs import PLANTED_BUGS, PlantedBugs
from ._simulation import SimConfig, run_seed

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Exit 0 if every seed passes; 1 (after printing the failure report) otherwise."""
    parser = argparse.ArgumentParser(prog="python -m safekeeper_recovery.sim")
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--bug", choices=PLANTED_BUGS, action="append", default=[],
                        help="switch on a planted bug (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per seed")
    args = parser.parse_args(argv)
    bugs = PlantedBugs(**{b: True for b in args.bug})
    cfg = SimConfig(bugs=bugs)
    started = time.monotonic()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        result = run_seed(seed, cfg)
        if args.verbose:
            print(f"seed {seed}: {'ok' if result.ok else 'FAILED'} "
                  f"faults={','.join(result.active_faults) or '-'} "
                  f"proposers={result.proposers} terms={result.elected_terms} "
                  f"steps={result.steps}", flush=True)
        if not result.ok:
            print(result.report(), file=sys.stderr)
            return 1
    elapsed = time.monotonic() - started
    print(f"{args.seeds} seeds passed in {elapsed:.1f}s ({args.seeds / elapsed:.2f} seeds/s)")
    return 0
