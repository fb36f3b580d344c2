"""Named fault points: a run activates each with probability 0.25; an active point then
fires on 25 % of its opportunities. Both draws come from the run's seeded generator."""

from __future__ import annotations

import random
from collections import Counter
from typing import Final

__all__ = ["ACTIVATION", "FAULT_POINTS", "FIRE", "Faults"]

FAULT_POINTS: Final = (
    "msg_delay",  # a proposer→node message or a donor→recipient chunk waits 0-0.3 s
    "conn_cut",  # a proposer connection is reset on a send
    "peer_info_drop",  # one peer-info message is lost
    "peer_info_delay",  # one peer-info message arrives 0-3 s late (reordered)
    "partition",  # one node is cut off from everyone (healed 1-6 s later)
    "node_crash",  # a node loses power (unflushed WAL gone) and restarts 0.5-4 s later
    "proposer_crash",  # the running proposer dies mid-run
    "new_proposer",  # a second proposer campaigns at once (a higher term)
    "dueling_proposers",  # two proposers campaign at the same instant (often the same term)
    "donor_term_bump",  # a node serving as a recovery donor bumps its term mid-stream
    "slow_disk",  # a node's storage stalls 0.05-1.5 s (writes, fsyncs, reads all wait)
)
ACTIVATION: Final = 0.25
FIRE: Final = 0.25


class Faults:
    """The fault plan of one run. ``fires(point)`` is the only question code asks."""

    def __init__(self, rng: random.Random, active: frozenset[str]) -> None:
        self.rng = rng
        self.active = active
        self.enabled = True
        self.fired: Counter[str] = Counter()

    @classmethod
    def draw(
        cls, rng: random.Random, *, activation: float = ACTIVATION,
        forced: frozenset[str] = frozenset(),
    ) -> Faults:
        """Activate each point with probability ``activation`` (``forced`` ones always; the
        draw is made either way, so forcing a point leaves the rest of the plan as is)."""
        unknown = forced - set(FAULT_POINTS)
        if unknown:
            raise ValueError(f"unknown fault points {sorted(unknown)}")
        active = frozenset(
            p for p in FAULT_POINTS if rng.random() < activation or p in forced
        )
        return cls(rng, active)

    def fires(self, point: str) -> bool:
        """Whether ``point`` fires now (never once faults are switched off)."""
        assert point in FAULT_POINTS, f"unknown fault point {point}"
        if not self.enabled or point not in self.active:
            return False
        if self.rng.random() < FIRE:
            self.fired[point] += 1
            return True
        return False
