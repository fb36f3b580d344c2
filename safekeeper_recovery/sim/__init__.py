"""Deterministic cluster simulation: safekeepers, proposers and the recovery engine in one
``trio.run`` under a mock clock, with seeded faults and invariants checked after every step.

``run_seed(seed, SimConfig(...))`` runs one seed and returns a :class:`SimResult` (its
``report()`` prints the seed, the first broken invariant, the last events and the replay
command). ``python -m safekeeper_recovery.sim --seeds N [--first-seed S] [--jobs J]`` runs
a range (in J worker processes).
See docs/simulation.md.
"""

from ._bugs import PLANTED_BUGS, PlantedBugs
from ._faults import FAULT_POINTS, Faults
from ._invariants import INVARIANTS, InvariantChecker, Violation
from ._simulation import SimConfig, SimResult, replay_command, run_seed

__all__ = [
    "FAULT_POINTS",
    "INVARIANTS",
    "PLANTED_BUGS",
    "Faults",
    "InvariantChecker",
    "PlantedBugs",
    "SimConfig",
    "SimResult",
    "Violation",
    "replay_command",
    "run_seed",
]
