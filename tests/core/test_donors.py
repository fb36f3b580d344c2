"""Donor selection (reference §4.2): who may a lagging node recover from, and why."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safekeeper_recovery.core import (
    DonorSelection,
    Lsn,
    NodeId,
    PeerInfo,
    TermLsn,
    select_donors,
)

ME = NodeId(1)
NOW = 1000.0
HEARTBEAT = 5.0


def peer(
    node_id: int, term: int, last_log_term: int, flush: int, *, age: float = 0.5
) -> PeerInfo:
    return PeerInfo(
        node_id=NodeId(node_id),
        term=term,
        last_log_term=last_log_term,
        flush_lsn=Lsn(flush),
        commit_lsn=Lsn(0),
        http_addr=f"http://sk{node_id}:7676",
        wal_addr=f"ws://sk{node_id}:5454",
        received_at=NOW - age,
    )


def select(
    peers: list[PeerInfo],
    *,
    term: int = 1,
    last_log_term: int = 1,
    flush: int = 0x1000,
    streaming: int = 0,
) -> DonorSelection:
    return select_donors(
        my_node_id=ME,
        my_term=term,
        my_last_log_term=last_log_term,
        my_flush_lsn=Lsn(flush),
        peers=peers,
        connected_proposers=streaming,
        now=NOW,
        heartbeat_timeout=HEARTBEAT,
    )


def donor_ids(sel: DonorSelection) -> list[int]:
    return [int(d.node_id) for d in sel.donors]


def reason(sel: DonorSelection, node_id: int) -> str:
    return dict(sel.reasons)[NodeId(node_id)]


# ---- ranking ------------------------------------------------------------------------------


def test_donors_are_sorted_by_last_log_term_then_flush_lsn_descending() -> None:
    sel = select(
        [
            peer(2, 2, 2, 0x2000),
            peer(3, 2, 2, 0x3000),
            peer(4, 3, 3, 0x1800),
            peer(5, 2, 2, 0x2800),
        ]
    )
    assert donor_ids(sel) == [4, 3, 5, 2]


def test_a_higher_term_with_a_lower_last_log_term_ranks_lower() -> None:
    # Peer 2 voted in term 9 but holds only term-2 WAL; peer 3 holds term-3 WAL. Ranking
    # by term alone (a known bug) would consider peer 2 the most advanced.
    sel = select([peer(2, 9, 2, 0x9000), peer(3, 3, 3, 0x1100)])
    assert [int(n) for n, _ in sel.reasons] == [3, 2]
    assert donor_ids(sel) == [3]


def test_equal_last_log_terms_are_ranked_by_flush_lsn_not_by_input_order() -> None:
    sel = select([peer(2, 4, 4, 0x2000), peer(3, 4, 4, 0x5000), peer(4, 4, 4, 0x3000)])
    assert donor_ids(sel) == [3, 4, 2]


def test_equal_positions_are_ranked_by_node_id_for_determinism() -> None:
    sel = select([peer(9, 4, 4, 0x2000), peer(3, 4, 4, 0x2000)])
    assert donor_ids(sel) == [3, 9]


# ---- eligibility rules ---------------------------------------------------------------------


def test_only_peers_strictly_ahead_in_last_log_term_and_flush_are_donors() -> None:
    sel = select(
        [
            peer(2, 2, 2, 0x1000),  # same position as ours (2, 0x1000)
            peer(3, 2, 2, 0x0FFF),  # same term, behind
            peer(4, 1, 1, 0x9000),  # further, but an older last_log_term
            peer(5, 2, 2, 0x1001),  # one byte ahead
            peer(6, 3, 3, 0x0010),  # newer last_log_term, lower flush: ahead
        ],
        term=2,
        last_log_term=2,
    )
    assert donor_ids(sel) == [6, 5]
    for node in (2, 3, 4):
        assert reason(sel, node).startswith("not ahead")


def test_a_peer_whose_term_differs_from_its_last_log_term_is_not_a_donor() -> None:
    sel = select([peer(2, 3, 2, 0x9000)])
    assert sel.donors == ()
    assert reason(sel, 2) == "term 3 != last_log_term 2 (leader not established)"


def test_a_peer_with_a_term_below_ours_is_not_a_donor_and_an_equal_one_is() -> None:
    behind = select([peer(2, 2, 2, 0x9000)], term=3)
    assert behind.donors == ()
    assert reason(behind, 2) == "term 2 < our term 3"
    equal = select([peer(2, 3, 3, 0x9000)], term=3)
    assert donor_ids(equal) == [2]


def test_a_connected_proposer_means_no_donors() -> None:
    sel = select([peer(2, 2, 2, 0x9000)], streaming=1)
    assert sel.donors == ()
    assert reason(sel, 2) == "eligible, but a proposer is connected to us"
    assert sel.why_no_donor == "1 proposer(s) connected to this node"


def test_dead_peers_are_excluded() -> None:
    sel = select([peer(2, 2, 2, 0x9000, age=HEARTBEAT + 0.01), peer(3, 2, 2, 0x8000, age=5.0)])
    assert donor_ids(sel) == [3]  # exactly the timeout old is still alive
    assert reason(sel, 2).startswith("not alive (last info 5.0s ago > 5s)")


def test_this_node_is_never_its_own_donor() -> None:
    sel = select([peer(1, 5, 5, 0x9000)])
    assert sel.donors == ()
    assert sel.reasons == ()
    assert sel.why_no_donor == "no alive peers"


# ---- explanations -----------------------------------------------------------------------------


def test_why_no_donor_is_none_when_there_is_a_donor() -> None:
    sel = select([peer(2, 2, 2, 0x9000)])
    assert sel.why_no_donor is None
    assert reason(sel, 2) == "donor at (2, 0/9000)"


def test_why_no_donor_with_no_peers_at_all() -> None:
    assert select([]).why_no_donor == "no alive peers"


def test_why_no_donor_lists_each_peer_and_its_reason() -> None:
    sel = select(
        [
            peer(2, 1, 1, 0x1000),
            peer(3, 3, 2, 0x9000),
            peer(4, 2, 2, 0x9000, age=60),
        ],
        term=2,
    )
    assert sel.why_no_donor == (
        "sk 3: term 3 != last_log_term 2 (leader not established); "
        "sk 4: not alive (last info 60.0s ago > 5s); "
        "sk 2: not ahead ((1, 0/1000) <= ours (1, 0/1000))"
    )


def test_selection_records_its_inputs_and_prints_as_one_line() -> None:
    sel = select([peer(2, 2, 2, 0x9000), peer(3, 3, 2, 0x9000)], term=2, flush=0x1234)
    assert (sel.term, sel.last_log_term, sel.flush_lsn) == (2, 1, Lsn(0x1234))
    assert sel.connected_proposers == 0
    text = str(sel)
    assert "\n" not in text
    assert text.startswith("term=2 last_log_term=1 flush_lsn=0/1234 connected_proposers=0 ")
    assert "donors=[2]" in text
    assert "3: term 3 != last_log_term 2" in text
    assert "NodeId(" not in text


def test_peer_position_is_last_log_term_then_flush() -> None:
    assert peer(2, 5, 4, 0x10).position == TermLsn(4, 0x10)


# ---- property --------------------------------------------------------------------------------

small_terms = st.integers(0, 4)
peers_strategy = st.lists(
    st.builds(
        peer,
        st.integers(1, 8),
        small_terms,
        small_terms,
        st.integers(0, 0x40),
        age=st.floats(0, 10),
    ),
    max_size=8,
    unique_by=lambda p: p.node_id,
)


@given(peers_strategy, small_terms, small_terms, st.integers(0, 0x40), st.integers(0, 2))
def test_donors_are_exactly_the_eligible_peers_most_advanced_first(
    peers: list[PeerInfo], term: int, llt: int, flush: int, streaming: int
) -> None:
    sel = select(peers, term=term, last_log_term=llt, flush=flush, streaming=streaming)
    mine = TermLsn(llt, flush)
    eligible = {
        p.node_id
        for p in peers
        if p.node_id != ME
        and NOW - p.received_at <= HEARTBEAT
        and mine < p.position
        and p.term == p.last_log_term
        and p.term >= term
    }
    assert {d.node_id for d in sel.donors} == (set() if streaming else eligible)
    positions = [d.position for d in sel.donors]
    assert positions == sorted(positions, reverse=True)
    assert {n for n, _ in sel.reasons} == {p.node_id for p in peers if p.node_id != ME}
    assert (sel.why_no_donor is None) == bool(sel.donors)
    assert "\n" not in str(sel)


@pytest.mark.parametrize("streaming", [0, 3])
def test_streaming_count_is_reported(streaming: int) -> None:
    assert f"connected_proposers={streaming}" in str(select([], streaming=streaming))
