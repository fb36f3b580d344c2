"""Core rules L1 and L3 of the WAL lifecycle: who uploads, what may be removed."""

from __future__ import annotations

from safekeeper_recovery.core import (
    INVALID_LSN,
    Lsn,
    NodeId,
    PeerInfo,
    choose_uploader,
    removal_horizon,
    uploader_rank,
)
from safekeeper_recovery.testing import make_ttid

SEG = 1 << 20


def peer(node: int, flush: int, commit: int, last_log_term: int = 1) -> PeerInfo:
    return PeerInfo(NodeId(node), 1, last_log_term, Lsn(flush), Lsn(commit), "http://x",
                    "ws://x", 0.0)


def test_l1_every_node_chooses_the_same_uploader_from_the_same_facts() -> None:
    tl = make_ttid(7, tenant=1)
    views = [
        choose_uploader(tl, NodeId(me), 1, Lsn(100), Lsn(100),
                        [peer(n, 100, 100) for n in (1, 2, 3) if n != me])
        for me in (1, 2, 3)
    ]
    assert len({v.uploader for v in views}) == 1
    assert views[0].candidates == tuple(
        sorted((NodeId(1), NodeId(2), NodeId(3)), key=lambda n: -uploader_rank(tl, n)))


def test_l1_timelines_spread_over_the_nodes() -> None:
    chosen = {
        choose_uploader(make_ttid(i, tenant=1), NodeId(1), 1, Lsn(100), Lsn(100),
                        [peer(2, 100, 100), peer(3, 100, 100)]).uploader
        for i in range(60)
    }
    assert chosen == {NodeId(1), NodeId(2), NodeId(3)}


def test_l1_a_node_behind_the_commit_position_or_on_an_old_term_is_not_a_candidate() -> None:
    tl = make_ttid(3, tenant=1)
    choice = choose_uploader(tl, NodeId(1), 1, Lsn(50), Lsn(50),
                             [peer(2, 100, 100), peer(3, 200, 100, last_log_term=0)])
    assert choice.candidates == (NodeId(2),), str(choice)
    assert choice.uploader == NodeId(2)


def test_l1_a_silent_peer_is_replaced_by_the_next_caught_up_node() -> None:
    tl = make_ttid(11, tenant=1)
    everyone = choose_uploader(tl, NodeId(1), 1, Lsn(100), Lsn(100),
                               [peer(2, 100, 100), peer(3, 100, 100)])
    best = everyone.uploader
    assert best is not None
    me = next(n for n in (1, 2, 3) if n != best)
    others = [peer(n, 100, 100) for n in (1, 2, 3) if n not in (best, me)]
    without = choose_uploader(tl, NodeId(me), 1, Lsn(100), Lsn(100), others)
    assert without.uploader == everyone.candidates[1]


def test_l3_without_archive_or_keep_size_nothing_is_removed() -> None:
    assert removal_horizon(commit_lsn=Lsn(10 * SEG), flush_lsn=Lsn(10 * SEG), seg_size=SEG,
                           backup_lsn=None, keep_bytes=None) == INVALID_LSN


def test_l3_with_an_archive_the_horizon_never_passes_backup_lsn() -> None:
    assert removal_horizon(commit_lsn=Lsn(10 * SEG), flush_lsn=Lsn(10 * SEG), seg_size=SEG,
                           backup_lsn=Lsn(3 * SEG + 5), keep_bytes=None) == Lsn(3 * SEG)
    assert removal_horizon(commit_lsn=Lsn(2 * SEG + 1), flush_lsn=Lsn(10 * SEG), seg_size=SEG,
                           backup_lsn=Lsn(8 * SEG), keep_bytes=None) == Lsn(2 * SEG)


def test_l3_keep_size_keeps_that_much_behind_the_flush_position() -> None:
    assert removal_horizon(commit_lsn=Lsn(10 * SEG), flush_lsn=Lsn(10 * SEG + 7), seg_size=SEG,
                           backup_lsn=None, keep_bytes=4 * SEG) == Lsn(6 * SEG)
    assert removal_horizon(commit_lsn=Lsn(10 * SEG), flush_lsn=Lsn(10 * SEG), seg_size=SEG,
                           backup_lsn=Lsn(9 * SEG), keep_bytes=4 * SEG) == Lsn(6 * SEG)
    assert removal_horizon(commit_lsn=Lsn(SEG), flush_lsn=Lsn(SEG), seg_size=SEG,
                           backup_lsn=None, keep_bytes=64 * SEG) == INVALID_LSN


def test_l3_a_peer_heard_from_lately_keeps_what_it_still_needs() -> None:
    assert removal_horizon(commit_lsn=Lsn(10 * SEG), flush_lsn=Lsn(10 * SEG), seg_size=SEG,
                           backup_lsn=Lsn(10 * SEG), keep_bytes=None,
                           peer_holds=[Lsn(4 * SEG + 9), Lsn(12 * SEG)]) == Lsn(4 * SEG)


def test_l3_a_replication_consumer_keeps_what_it_has_not_flushed() -> None:
    assert removal_horizon(commit_lsn=Lsn(10 * SEG), flush_lsn=Lsn(10 * SEG), seg_size=SEG,
                           backup_lsn=Lsn(10 * SEG), keep_bytes=None,
                           peer_holds=[Lsn(9 * SEG)],
                           consumer_holds=[Lsn(3 * SEG + 1), Lsn(11 * SEG)]) == Lsn(3 * SEG)
