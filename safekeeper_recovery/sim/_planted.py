"""The planted bugs that live in product classes, as the simulator's own subclasses and
views: product code has no bug switch, only a small method where each rule lives, and the
simulator overrides exactly that method (``_bugs.py`` says which bug is which).

Only the simulator constructs or converts objects into these, and only on its own nodes.
"""

from __future__ import annotations

from typing import Any, cast

from ..core import INVALID_LSN, Acceptor, Lsn, Term
from ..proposer import Proposer
from ..timeline import Timeline

__all__ = ["RefusalStopsProposer", "plant_in_node", "term_blind"]


class _RegressingAcceptor(Acceptor):
    """``commit_regresses``: R8's "never decreases" is skipped (commit_lsn is still clamped
    to flush_lsn)."""

    def _commit_floor(self) -> Lsn:
        return INVALID_LSN


class _HeedlessTimeline(Timeline):
    """``recovery_ignores_proposer`` (the node's half): recovery messages are processed
    while a proposer is connected."""

    def _recovery_must_yield(self) -> bool:
        return False


class RefusalStopsProposer(Proposer):
    """``refusal_stops_proposer``: the old rule P1, a refusal at our own term from a node we
    never asked stops the run even once elected."""

    def _refusal_is_fatal(self) -> bool:
        return True


def plant_in_node(timeline: Timeline, *, commit_regresses: bool,
                  recovery_ignores_proposer: bool) -> None:
    """Turn a freshly loaded node's timeline and acceptor into their buggy subclasses (the
    subclasses add no state, so converting the live objects is exact)."""
    if commit_regresses:
        timeline.acceptor.__class__ = _RegressingAcceptor
    if recovery_ignores_proposer:
        timeline.__class__ = _HeedlessTimeline


class _TermBlindTimeline:
    """``no_sender_term_check``: what a donor's WAL sender sees of its timeline, with the
    term frozen at the moment the stream was looked up and reads that ignore the term, so
    the sender streams on after a term change (reference §6.3 skipped)."""

    def __init__(self, inner: Timeline) -> None:
        self._inner = inner
        self.term: Term = inner.term

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def read_wal(self, start: Lsn, max_bytes: int, *, term: Term | None = None
                       ) -> bytes:
        return await self._inner.read_wal(start, max_bytes, term=None)


def term_blind(timeline: Timeline) -> Timeline:
    """``timeline`` as a term-blind sender sees it (typed as a Timeline for the connector,
    which only hands it to ``run_wal_sender`` and reads its snapshot)."""
    return cast(Timeline, _TermBlindTimeline(timeline))
