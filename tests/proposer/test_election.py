"""Pure election and commit rules (proposer ``_election``, reference Appendix C and §3.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safekeeper_recovery.core import Lsn, TermHistory, VoteResponse
from safekeeper_recovery.proposer import (
    elect,
    next_term,
    quorum_commit_lsn,
    quorum_size,
    start_point,
)


def vote(flush: int, *pairs: tuple[int, int], truncate: int = 0, term: int = 9) -> VoteResponse:
    return VoteResponse(
        term=term,
        vote_given=True,
        flush_lsn=Lsn(flush),
        truncate_lsn=Lsn(truncate),
        term_history=TermHistory.of(*pairs),
    )


@pytest.mark.parametrize(("n", "q"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_e1_quorum_is_a_strict_majority(n: int, q: int) -> None:
    assert quorum_size(n) == q


def test_e1_no_safekeepers_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        quorum_size(0)


def test_e2_term_is_one_above_every_greeting() -> None:
    assert next_term([3, 7, 5]) == 8
    assert next_term([]) == 1


def test_e3_donor_is_highest_last_log_term_then_flush() -> None:
    votes = {
        "a": vote(900, (0, 10), (1, 10)),  # longest WAL but an older last term
        "b": vote(500, (0, 10), (1, 10), (2, 400)),
        "c": vote(450, (0, 10), (1, 10), (2, 400)),
    }
    e = elect(3, votes)
    assert e.donor == "b"
    assert e.donor_last_log_term == 2
    assert e.term_start_lsn == Lsn(500)
    assert e.term_history == TermHistory.of((0, 10), (1, 10), (2, 400), (3, 500))


def test_e3_ties_go_to_the_first_voter() -> None:
    votes = {"x": vote(100, (0, 10), (1, 10)), "y": vote(100, (0, 10), (1, 10))}
    assert elect(2, votes).donor == "x"


def test_e4_truncate_lsn_is_the_voters_max() -> None:
    votes = {"a": vote(100, (0, 10), truncate=30), "b": vote(100, (0, 10), truncate=70)}
    assert elect(1, votes).truncate_lsn == Lsn(70)


def test_e4_a_donor_term_at_or_above_ours_is_refused() -> None:
    with pytest.raises(ValueError, match="E4"):
        elect(2, {"a": vote(100, (0, 10), (2, 50))})


def test_e3_no_votes_is_an_error() -> None:
    with pytest.raises(ValueError, match="E3"):
        elect(1, {})


def test_election_explains_itself_in_one_line() -> None:
    text = str(elect(2, {"a": vote(100, (0, 10), (1, 10))}))
    assert "donor a" in text
    assert "\n" not in text


# E5 per node, the worked examples of reference §3.2 seen from the proposer.
PROP = TermHistory.of((1, 10), (2, 20), (4, 40))


@pytest.mark.parametrize(
    ("sk", "flush", "expected"),
    [
        (((1, 10), (2, 20), (3, 30)), 40, 30),  # example 2: diverged term-3 tail cut at 30
        (((1, 10), (2, 20)), 32, 32),  # example 3: stopped inside the common term
        (((1, 10), (2, 20), (4, 40)), 55, 55),  # common term is ours: stream from its end
        (((5, 10),), 30, 10),  # no common term: history[0].lsn
    ],
)
def test_e5_start_point_per_node(
    sk: tuple[tuple[int, int], ...], flush: int, expected: int
) -> None:
    assert start_point(PROP, vote(flush, *sk)) == Lsn(expected)


def test_e5_empty_term_keeps_only_the_winning_history() -> None:
    # example 7: the 5 bytes written in term 2 after 20 are not in the winning history
    prop = TermHistory.of((1, 10), (2, 20), (3, 20))
    assert start_point(prop, vote(25, (1, 10), (2, 20))) == Lsn(20)


def test_e5_divergent_unacknowledged_tail_is_truncated_at_the_new_term_start() -> None:
    # Node C took more of term 1 than the quorum; the term-2 leader elected without it.
    e = elect(2, {"a": vote(512, (0, 0), (1, 0)), "b": vote(512, (0, 0), (1, 0))})
    late = vote(2048, (0, 0), (1, 0))
    assert e.start_for(late) == Lsn(512)


def test_e6_commit_is_the_quorum_th_highest_flush() -> None:
    assert quorum_commit_lsn([Lsn(300), Lsn(100), Lsn(200)], 2, Lsn(50)) == Lsn(200)


def test_e6_too_few_responses_commit_nothing() -> None:
    assert quorum_commit_lsn([Lsn(300)], 2, Lsn(50)) == Lsn(0)


def test_e6_flushes_of_an_older_term_do_not_count() -> None:
    # Two nodes still sit below our term start: their WAL is an older term's; never commit it
    # on its own, even though it is on a quorum.
    assert quorum_commit_lsn([Lsn(90), Lsn(80), Lsn(500)], 2, Lsn(100)) == Lsn(0)
    assert quorum_commit_lsn([Lsn(100), Lsn(80), Lsn(500)], 2, Lsn(100)) == Lsn(100)


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=7), st.integers(0, 10_000))
def test_e6_commit_is_flushed_on_a_quorum_in_our_term(flushes: list[int], start: int) -> None:
    q = quorum_size(len(flushes))
    commit = quorum_commit_lsn([Lsn(f) for f in flushes], q, Lsn(start))
    if commit:
        assert commit >= start
        assert sum(f >= commit for f in flushes) >= q
    else:
        assert sum(f >= max(start, 1) for f in flushes) < q or start == 0


def test_no_term_is_left_above_the_largest_one() -> None:
    from safekeeper_recovery.core import MAX_TERM

    assert next_term([MAX_TERM - 1, 3]) == MAX_TERM
    with pytest.raises(ValueError, match="no term is left to campaign for"):
        next_term([3, MAX_TERM])
