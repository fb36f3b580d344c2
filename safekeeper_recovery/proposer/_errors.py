"""How a proposer run ends when it does not succeed.

::

    SafekeeperError (core)
    └── ProposerError            the proposer stopped without writing all its WAL
        ├── NewerTermError       another proposer took over (a higher term exists)
        └── LostQuorumError      fewer than a quorum of safekeepers are reachable
"""

from __future__ import annotations

from collections.abc import Mapping

from ..core import SafekeeperError, Term

__all__ = ["LostQuorumError", "NewerTermError", "ProposerError"]


class ProposerError(SafekeeperError):
    """The proposer stopped before its WAL was written and committed."""


class NewerTermError(ProposerError):
    """A safekeeper reported ``term`` above ours: another proposer took over."""

    def __init__(self, term: Term, our_term: Term | None, *, where: str) -> None:
        ours = f" (ours is {our_term})" if our_term is not None else ""
        super().__init__(
            f"a newer term {term} exists{ours}: another proposer took over (seen at {where})"
        )
        self.term = term
        self.our_term = our_term


class LostQuorumError(ProposerError):
    """Fewer than ``quorum`` of ``total`` safekeepers are reachable; ``reasons`` says why."""

    def __init__(self, reachable: int, total: int, quorum: int, reasons: Mapping[str, str]) -> None:
        why = "; ".join(f"{url}: {reason}" for url, reason in reasons.items())
        super().__init__(
            f"lost quorum: {reachable} of {total} safekeepers reachable, need {quorum}"
            + (f" ({why})" if why else "")
        )
        self.reachable = reachable
        self.total = total
        self.quorum = quorum
        self.reasons = dict(reasons)
