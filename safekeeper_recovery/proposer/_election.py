"""Pure election and commit rules of a proposer (reference Appendix C, §2.4 to 2.7, §3).

Theory of operation
-------------------
A proposer greets every safekeeper, picks a term above every greeting's term, asks for votes
and, once a quorum has voted, builds its history from the most advanced voter (the *donor*).
Every elected node then receives ``ProposerElected`` with the point where its WAL stops
agreeing with that history and is streamed WAL from there. WAL is committed once a quorum has
flushed it **in the proposer's term**.

Rules (numbers appear in error messages and test names)
--------------------------------------------------------
E1  quorum = n // 2 + 1.
E2  propTerm = max(greeting terms) + 1; when that is above ``MAX_TERM`` (a node already at
    the largest term a u64 holds) there is no term left to campaign for: ``ValueError``.
E3  donor = the voter with the highest ``(last_log_term of its returned history, flush_lsn)``;
    ties go to the first voter in the given order.
E4  propTermStartLsn = the donor's flush_lsn; propTermHistory = the donor's (already cut)
    history + ``(propTerm, propTermStartLsn)``; truncate_lsn = max of the voters'.
E5  a node starts at ``find_highest_common_point(propTermHistory, its history, its flush)``,
    or at ``propTermHistory[0].lsn`` when there is none.
E6  commit_lsn = the quorum-th highest flush_lsn among the AppendResponses; a flush below
    propTermStartLsn counts as 0, so WAL of an older term is never committed on its own.

Nothing here does I/O; same input, same output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import final

import attrs

from ..core import (
    INVALID_LSN,
    MAX_TERM,
    Lsn,
    Term,
    TermHistory,
    TermLsn,
    VoteResponse,
    find_highest_common_point,
)

__all__ = ["Election", "elect", "next_term", "quorum_commit_lsn", "quorum_size", "start_point"]


def quorum_size(n: int) -> int:
    """E1: how many of ``n`` safekeepers form a quorum."""
    if n < 1:
        raise ValueError(f"need at least one safekeeper, got {n}")
    return n // 2 + 1


def next_term(greeting_terms: Iterable[Term]) -> Term:
    """E2: the term to campaign for, above every term the greetings reported.

    Raises ``ValueError`` when a greeting reported ``MAX_TERM`` (no term is above it)."""
    highest = max(greeting_terms, default=0)
    if highest >= MAX_TERM:
        raise ValueError(
            f"E2: a node is at term {highest}, the largest term there is: no term is left "
            "to campaign for (the timeline cannot elect a proposer any more)"
        )
    return Term(highest + 1)


def start_point(history: TermHistory, vote: VoteResponse) -> Lsn:
    """E5: where a voter whose reply was ``vote`` must truncate and start receiving."""
    lcp = find_highest_common_point(history, vote.term_history, vote.flush_lsn)
    return lcp.lsn if lcp is not None else history[0].lsn


@final
@attrs.frozen
class Election:
    """The outcome of an election and the inputs that justified it (printable in one line)."""

    term: Term
    donor: str
    """Key (URL) of the donor voter."""
    donor_last_log_term: Term
    term_start_lsn: Lsn
    term_history: TermHistory
    truncate_lsn: Lsn
    votes: Mapping[str, VoteResponse] = attrs.field(repr=False)

    def start_for(self, vote: VoteResponse) -> Lsn:
        """E5 for any voter, including one that voted after the election."""
        return start_point(self.term_history, vote)

    def __str__(self) -> str:
        voters = ", ".join(
            f"{key}: last_log_term={v.term_history.last_log_term(v.flush_lsn)} flush={v.flush_lsn}"
            for key, v in self.votes.items()
        )
        return (
            f"elected in term {self.term}: donor {self.donor} (last_log_term "
            f"{self.donor_last_log_term}, flush {self.term_start_lsn}), history "
            f"{self.term_history}; voters [{voters}]"
        )


def elect(term: Term, votes: Mapping[str, VoteResponse]) -> Election:
    """E3 and E4: build the proposer's view from a quorum's (or more) votes, in order.

    Raise ``ValueError`` when there are no votes or a voter reports a term at or above
    ``term`` in its history (the caller must have checked that the votes are for ``term``).
    """
    if not votes:
        raise ValueError("E3: cannot elect without votes")

    def rank(key: str) -> TermLsn:
        v = votes[key]
        return TermLsn(v.term_history.last_log_term(v.flush_lsn), v.flush_lsn)

    donor = max(votes, key=rank)  # max() keeps the first of equals: ties go to order
    dv = votes[donor]
    last = rank(donor).term
    if last >= term:
        raise ValueError(f"E4: donor {donor} has WAL of term {last}, not below ours ({term})")
    history = dv.term_history.up_to(dv.flush_lsn).extended(TermLsn(term, dv.flush_lsn))
    truncate = max((v.truncate_lsn for v in votes.values()), default=INVALID_LSN)
    return Election(
        term=term,
        donor=donor,
        donor_last_log_term=last,
        term_start_lsn=dv.flush_lsn,
        term_history=history,
        truncate_lsn=truncate,
        votes=dict(votes),
    )


def quorum_commit_lsn(flushes: Iterable[Lsn], quorum: int, term_start_lsn: Lsn) -> Lsn:
    """E6: the quorum-th highest flush, counting flushes below ``term_start_lsn`` as 0.

    Nodes that have not answered an append yet are simply absent from ``flushes``.
    """
    counted = sorted((f if f >= term_start_lsn else INVALID_LSN for f in flushes), reverse=True)
    return Lsn(counted[quorum - 1]) if len(counted) >= quorum else INVALID_LSN
