"""Deliberate protocol bugs the simulator must catch, switched on one at a time.

Each flag names one broken rule and is threaded to the seam where that rule lives, always
one the simulator owns: its storage twin, connections, donor streams and recovery target,
or its subclass of a product class that overrides the one method holding the rule
(``_planted.py``; product code has no bug switch). docs/simulation.md lists which invariant
catches each and where.
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
    """The donor's WAL sender streams without checking its term (reference §6.3): recovery
    may copy WAL of a term the donor no longer vouches for. Seam: the simulator's donor
    lookup hands the sender a term-blind view of the donor's timeline."""
    commit_regresses: bool = False
    """The acceptor adopts a lower commit_lsn from a leader or a peer (R8's max skipped).
    Seam: the simulator's ``Acceptor`` subclass overriding ``_commit_floor``."""
    double_vote: bool = False
    """An acceptor grants a second vote in the term it already voted in (R2 with ``>=``).
    Seam: the simulator's proposer connection turns such a refusal into a grant (the
    acceptor's state is what the buggy acceptor's would be: the term is already ``t``)."""
    recovery_stops_early: bool = False
    """Recovery never copies the donor's last byte (a chunk that reaches the donor's
    flush_lsn loses it), so a lagging node never closes the gap by recovery alone. Seam:
    the simulator's donor stream."""
    flush_not_durable: bool = False
    """fsync lies: a crash also loses up to 64 KiB of WAL the node had reported flushed.
    Seam: the simulator's storage twin."""
    refusal_stops_proposer: bool = False
    """The old rule P1: an elected proposer stops ("term already taken") when a node it never
    asked refuses its vote because peer recovery already put that node in its term. Seam:
    the simulator's ``Proposer`` subclass overriding ``_refusal_is_fatal``."""
    recovery_ignores_proposer: bool = False
    """Recovery does not yield to a connected proposer: it keeps voting, truncating and
    appending while a proposer greets, votes and streams. Seam: the simulator's recovery
    target (its session never reports a proposer) and its ``Timeline`` subclass overriding
    ``_recovery_must_yield``."""

    @classmethod
    def only(cls, name: str) -> PlantedBugs:
        if name not in PLANTED_BUGS:
            raise ValueError(f"unknown planted bug {name!r}; known: {', '.join(PLANTED_BUGS)}")
        return cls(**{name: True})

    def active(self) -> list[str]:
        return [name for name in PLANTED_BUGS if getattr(self, name)]


PLANTED_BUGS: tuple[str, ...] = tuple(a.name for a in attrs.fields(PlantedBugs))
