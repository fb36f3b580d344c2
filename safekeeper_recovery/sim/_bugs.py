"""Deliberate protocol bugs the simulator must catch, switched on one at a time.

Each flag names one broken rule and is threaded to the seam where that rule lives. A flag
is only ever read by simulator-owned seams (storage twin, donor connector, recovery
target); planting one never changes production behaviour.
"""

from __future__ import annotations

from typing import final

import attrs

__all__ = ["PLANTED_BUGS", "PlantedBugs"]


@final
@attrs.frozen
class PlantedBugs:
    """All off by default. ``PlantedBugs.only(name)`` switches one on."""

    vote_before_durable: bool = False
    """Control-file writes become durable one write late: a vote (or term) acknowledged
    before it is on disk is forgotten by a crash. Seam: the simulator's control store."""
    no_sender_term_check: bool = False
    """The donor's WAL sender streams without checking its term: recovery may copy WAL of
    a term the donor no longer vouches for. Seam: the simulator's donor connector."""
    # Designed, not planted yet (each needs a one-line seam in product code; see
    # docs/simulation.md): donors_by_term_only, truncate_below_commit,
    # recovery_carries_commit, proposer_commits_old_term.

    @classmethod
    def only(cls, name: str) -> PlantedBugs:
        if name not in PLANTED_BUGS:
            raise ValueError(f"unknown planted bug {name!r}; known: {', '.join(PLANTED_BUGS)}")
        return cls(**{name: True})

    def active(self) -> list[str]:
        return [name for name in PLANTED_BUGS if getattr(self, name)]


PLANTED_BUGS: tuple[str, ...] = tuple(a.name for a in attrs.fields(PlantedBugs))
