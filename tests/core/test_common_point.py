"""TermLsn, TermHistory and find_highest_common_point (reference §1.3, §1.4, §3)."""

from __future__ import annotations

import operator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safekeeper_recovery.core import (
    CommonPointError,
    LocalProtocolError,
    Lsn,
    TermHistory,
    TermLsn,
    find_highest_common_point,
)

from ._strategies import U64, term_histories


def H(*pairs: tuple[int, int | str]) -> TermHistory:
    """A history from (term, lsn) pairs; an lsn may be written ``"0/1000"``."""
    return TermHistory(
        TermLsn(t, Lsn.parse(lsn) if isinstance(lsn, str) else Lsn(lsn)) for t, lsn in pairs
    )


def fhcp(prop: TermHistory, sk: TermHistory, end: int | str) -> TermLsn | None:
    return find_highest_common_point(
        prop, sk, Lsn.parse(end) if isinstance(end, str) else Lsn(end)
    )


# ---- the eight worked examples of reference §3.2 -----------------------------------------


def test_example_1_no_common_term_gives_none() -> None:
    assert fhcp(H((0, 1)), H((1, 1), (2, 2)), 3) is None


def test_example_2_diverged_in_the_middle_truncates_the_safekeepers_tail() -> None:
    prop = H((1, 10), (2, 20), (4, 40))
    sk = H((1, 10), (2, 20), (3, 30))
    assert fhcp(prop, sk, 40) == TermLsn(2, 30)


def test_example_3_safekeeper_stopped_inside_the_common_term() -> None:
    prop = H((1, 10), (2, 20), (4, 40))
    sk = H((1, 10), (2, 20))
    assert fhcp(prop, sk, 32) == TermLsn(2, 32)


def test_example_4_common_term_is_the_leaders_last_term() -> None:
    assert fhcp(H((1, 10), (2, 20)), H((1, 10), (2, 20)), 32) == TermLsn(2, 32)


def test_example_5_lagging_node_in_an_older_term_streams_from_its_end() -> None:
    donor = H((1, "0/1000"), (3, "0/5000"))
    lagging = H((1, "0/1000"))
    assert fhcp(donor, lagging, "0/4000") == TermLsn(1, Lsn.parse("0/4000"))


def test_example_6_lagging_node_loses_its_uncommitted_tail() -> None:
    donor = H((1, "0/1000"), (3, "0/5000"))
    lagging = H((1, "0/1000"), (2, "0/4800"))
    assert fhcp(donor, lagging, "0/6000") == TermLsn(1, Lsn.parse("0/4800"))


def test_example_7_empty_term_in_the_leader_history_truncates_at_the_shared_lsn() -> None:
    prop = H((1, 10), (2, 20), (3, 20))
    sk = H((1, 10), (2, 20))
    assert fhcp(prop, sk, 25) == TermLsn(2, 20)


def test_example_8_empty_safekeeper_history_gives_none() -> None:
    assert fhcp(H((1, 10), (2, 20)), H(), 0) is None


def test_empty_proposer_history_gives_none() -> None:
    assert fhcp(H(), H((1, 10)), 20) is None


# ---- precondition violations ----------------------------------------------------------------


def test_safekeeper_history_past_its_wal_end_raises_common_point_error() -> None:
    with pytest.raises(CommonPointError, match="reaches past its WAL end"):
        fhcp(H((1, 10), (2, 20)), H((1, 10), (2, 20)), 19)


def test_same_term_with_different_start_lsns_raises_common_point_error() -> None:
    with pytest.raises(CommonPointError, match="same term 2 has different start LSNs"):
        fhcp(H((1, 10), (2, 20)), H((1, 10), (2, 21)), 30)


def test_common_point_error_is_a_local_protocol_error() -> None:
    assert issubclass(CommonPointError, LocalProtocolError)


# ---- properties ----------------------------------------------------------------------------


@st.composite
def diverging_histories(draw: st.DrawFn) -> tuple[TermHistory, TermHistory, Lsn]:
    """A proposer history and a safekeeper history that share a non-empty prefix, then go
    their own ways in disjoint terms (one leader per term), with the safekeeper's history cut
    at its WAL end."""
    common = draw(term_histories(min_size=1, max_size=5, max_lsn=2**40))
    last = common[-1]
    later: set[int] = set()
    if last.term < U64:
        later = draw(st.sets(st.integers(last.term + 1, U64), max_size=10))
    mine = draw(st.sets(st.sampled_from(sorted(later)), max_size=len(later))) if later else set()

    def extend(terms: list[int]) -> TermHistory:
        starts = sorted(
            draw(st.lists(st.integers(last.lsn, 2**41), min_size=len(terms), max_size=len(terms)))
        )
        return TermHistory(
            (*common, *(TermLsn(t, Lsn(s)) for t, s in zip(terms, starts, strict=True)))
        )

    prop = extend(sorted(later - mine))
    sk_full = extend(sorted(mine))
    sk_end = Lsn(draw(st.integers(last.lsn, 2**42)))
    return prop, sk_full.up_to(sk_end), sk_end


def _end_of_term(history: TermHistory, term: int) -> int:
    """Where ``history`` says ``term`` ends (+infinity for its last term)."""
    for i, entry in enumerate(history):
        if entry.term == term:
            return history[i + 1].lsn if i + 1 < len(history) else 2**64
    raise AssertionError(f"term {term} not in {history}")


def _start_of_term(history: TermHistory, term: int) -> Lsn:
    return next(e.lsn for e in history if e.term == term)


@given(diverging_histories())
def test_common_point_never_exceeds_sk_end_nor_the_proposers_end_of_that_term(
    case: tuple[TermHistory, TermHistory, Lsn],
) -> None:
    prop, sk, sk_end = case
    point = find_highest_common_point(prop, sk, sk_end)
    assert point is not None
    assert point.lsn <= sk_end
    assert point.lsn <= _end_of_term(prop, point.term)
    # ... and never falls before the start of that term.
    assert point.lsn >= _start_of_term(prop, point.term)


@given(diverging_histories())
def test_common_point_term_is_the_highest_term_in_both_histories(
    case: tuple[TermHistory, TermHistory, Lsn],
) -> None:
    prop, sk, sk_end = case
    point = find_highest_common_point(prop, sk, sk_end)
    assert point is not None
    shared = {e.term for e in prop} & {e.term for e in sk}
    assert point.term in shared
    assert point.term == max(shared)
    assert _start_of_term(prop, point.term) == _start_of_term(sk, point.term)


@given(term_histories(min_size=1), st.integers(0, 2**20))
def test_history_compared_with_itself_gives_its_last_term_at_its_end(
    history: TermHistory, extra: int
) -> None:
    end = Lsn(min(int(history[-1].lsn) + extra, U64))
    assert find_highest_common_point(history, history, end) == TermLsn(history[-1].term, end)


# ---- TermLsn -------------------------------------------------------------------------------


def test_term_lsn_orders_by_term_first_then_lsn() -> None:
    assert TermLsn(1, 1000) < TermLsn(2, 0)
    assert TermLsn(2, 5) < TermLsn(2, 6)
    assert max(TermLsn(3, 1), TermLsn(2, 10**9)) == TermLsn(3, 1)
    assert str(TermLsn(2, 0x1000)) == "(2, 0/1000)"


@pytest.mark.parametrize("term", [-1, 2**64])
def test_term_lsn_refuses_a_term_outside_u64(term: int) -> None:
    with pytest.raises(ValueError, match="term out of u64 range"):
        TermLsn(term, 0)


# ---- TermHistory ---------------------------------------------------------------------------


def test_up_to_is_inclusive_and_keeps_equal_lsn_entries_together() -> None:
    h = H((1, 10), (2, 20), (3, 20), (4, 30))
    assert h.up_to(Lsn(9)) == H()
    assert h.up_to(Lsn(10)) == H((1, 10))
    assert h.up_to(Lsn(19)) == H((1, 10))
    assert h.up_to(Lsn(20)) == H((1, 10), (2, 20), (3, 20))
    assert h.up_to(Lsn(29)) == H((1, 10), (2, 20), (3, 20))
    assert h.up_to(Lsn(30)) == h
    assert h.up_to(Lsn(U64)) == h


def test_last_log_term_is_the_term_of_the_last_entry_at_or_below_flush() -> None:
    h = H((1, 10), (2, 20), (3, 20))
    assert h.last_log_term(Lsn(9)) == 0
    assert h.last_log_term(Lsn(10)) == 1
    assert h.last_log_term(Lsn(19)) == 1
    assert h.last_log_term(Lsn(20)) == 3  # the empty term 2 is skipped over
    assert H().last_log_term(Lsn(U64)) == 0


@given(term_histories(), st.integers(0, U64).map(Lsn))
def test_up_to_is_a_prefix_with_every_entry_at_or_below_the_lsn(
    history: TermHistory, lsn: Lsn
) -> None:
    cut = history.up_to(lsn)
    assert tuple(history[: len(cut)]) == cut.entries
    assert all(e.lsn <= lsn for e in cut)
    if len(cut) < len(history):
        assert history[len(cut)].lsn > lsn
    assert history.last_log_term(lsn) == (cut[-1].term if cut else 0)


@pytest.mark.parametrize(
    "pairs",
    [
        [(1, 10), (1, 20)],
        [(2, 10), (1, 20)],
    ],
)
def test_history_validator_rejects_non_increasing_terms(pairs: list[tuple[int, int]]) -> None:
    with pytest.raises(ValueError, match="terms must increase"):
        TermHistory.of(*pairs)


def test_history_validator_rejects_decreasing_lsns() -> None:
    with pytest.raises(ValueError, match="LSNs must not decrease"):
        TermHistory.of((1, 20), (2, 10))


def test_history_validator_accepts_equal_lsns() -> None:
    assert len(TermHistory.of((1, 20), (2, 20), (3, 20))) == 3


def test_history_validator_rejects_entries_that_are_not_term_lsns() -> None:
    with pytest.raises(TypeError, match="must be TermLsn"):
        TermHistory([(1, 10)])  # type: ignore[list-item]  # the run-time check under test


def test_history_is_hashable_and_compares_by_entries() -> None:
    a = TermHistory.of((1, 10), (2, 20))
    b = TermHistory.from_entries([TermLsn(1, 10), TermLsn(2, 20)])
    assert a == b
    assert hash(a) == hash(b)
    assert {a: "x"}[b] == "x"
    assert a != TermHistory.of((1, 10))
    assert a != TermHistory.of((1, 10), (2, 21))
    assert not operator.eq(a, a.entries)  # never equal to a plain tuple of the same entries


def test_history_is_a_sequence() -> None:
    h = TermHistory.of((1, 10), (2, 20), (3, 30))
    assert len(h) == 3
    assert h[0] == TermLsn(1, 10)
    assert h[-1] == TermLsn(3, 30)
    assert tuple(h[1:]) == (TermLsn(2, 20), TermLsn(3, 30))
    assert list(h) == list(h.entries)
    assert TermLsn(2, 20) in h
    assert h.extended(TermLsn(4, 30)) == TermHistory.of((1, 10), (2, 20), (3, 30), (4, 30))
    with pytest.raises(ValueError, match="terms must increase"):
        h.extended(TermLsn(3, 40))


def test_history_str_shows_at_most_the_last_20_entries() -> None:
    assert str(TermHistory.of((1, 0x10), (2, 0x20))) == "[(1, 0/10), (2, 0/20)]"
    long = TermHistory.of(*((t, t) for t in range(1, 26)))
    text = str(long)
    assert text.startswith("[…, (6, 0/6), ")
    assert text.endswith("(25, 0/19)]")
    assert text.count("(") == 20
