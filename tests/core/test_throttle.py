"""Rules T1-T6 of core/_throttle.py, with a fake clock (the time is an argument)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safekeeper_recovery.core import (
    MIN_BURST,
    Lsn,
    NodeId,
    PeerInfo,
    TokenBucket,
    quorum_at_risk,
)

MiB = 1024 * 1024


def run(bucket: TokenBucket, sizes: list[int], start: float = 0.0) -> list[float]:
    """Pay each size in turn, waiting as told; return the time each take happened."""
    now = start
    times = []
    for n in sizes:
        ticket = bucket.take(n, now)
        times.append(now)
        now += bucket.wait(ticket, now)
    return times


def test_t1_t2_a_long_run_moves_rate_bytes_per_second() -> None:
    bucket = TokenBucket(float(MiB))
    times = run(bucket, [128 * 1024] * 200)  # 25 MiB at 1 MiB/s
    # The first burst passes at once, then 1 MiB/s: the last take is at ~24.9 s.
    assert times[-1] == pytest.approx((200 * 128 * 1024 - MIN_BURST - 128 * 1024) / MiB,
                                      rel=0.01)


@given(rate=st.integers(64 * 1024, 512 * MiB),
       sizes=st.lists(st.integers(0, MiB), min_size=1, max_size=200))
def test_t2_no_interval_carries_more_than_burst_plus_rate_plus_one_take(
        rate: int, sizes: list[int]) -> None:
    bucket = TokenBucket(float(rate))
    times = run(bucket, sizes)
    for i in range(len(sizes)):
        for j in range(i, len(sizes)):
            moved = sum(sizes[i:j + 1])
            allowed = bucket.burst + rate * (times[j] - times[i]) + sizes[j]
            assert moved <= allowed * (1 + 1e-9) + 1


def test_t2_a_take_larger_than_the_burst_passes_and_waits_its_debt() -> None:
    bucket = TokenBucket(float(MIN_BURST))  # burst = 64 KiB
    ticket = bucket.take(MiB, 0.0)
    assert bucket.wait(ticket, 0.0) == pytest.approx((MiB - MIN_BURST) / MIN_BURST)


def test_t3_takers_share_the_rate_in_arrival_order() -> None:
    bucket = TokenBucket(float(MiB))
    bucket.take(MIN_BURST, 0.0)  # empty it
    first = bucket.take(MiB, 0.0)
    second = bucket.take(MiB, 0.0)
    assert bucket.wait(first, 0.0) == pytest.approx(1.0)
    assert bucket.wait(second, 0.0) == pytest.approx(2.0)
    assert bucket.wait(first, 1.0) == 0.0
    assert bucket.wait(second, 1.0) == pytest.approx(1.0)


def test_t4_unlimited_never_waits() -> None:
    bucket = TokenBucket(None)
    assert all(bucket.wait(bucket.take(MiB, 0.0), 0.0) == 0.0 for _ in range(1000))


def test_t5_a_new_rate_applies_to_waiting_takers() -> None:
    bucket = TokenBucket(float(MiB))
    bucket.take(MIN_BURST, 0.0)
    ticket = bucket.take(4 * MiB, 0.0)
    assert bucket.wait(ticket, 0.0) == pytest.approx(4.0)
    bucket.set_rate(4.0 * MiB, 1.0)  # 1 MiB repaid at the old rate, 3 MiB left
    assert bucket.wait(ticket, 1.0) == pytest.approx(0.75)
    bucket.set_rate(None, 1.5)
    assert bucket.wait(ticket, 1.5) == 0.0
    bucket.set_rate(float(MiB), 2.0)  # limited again: a fresh, full bucket
    assert bucket.wait(bucket.take(MIN_BURST, 2.0), 2.0) == 0.0


def test_rates_must_be_positive() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive"):
            TokenBucket(bad)


def peer(node: int, flush: int, commit: int, received_at: float = 100.0) -> PeerInfo:
    return PeerInfo(NodeId(node), 1, 1, Lsn(flush), Lsn(commit), "http://x", "ws://x",
                    received_at)


def test_t6_three_nodes_all_up_one_lagging_is_not_at_risk() -> None:
    peers = [peer(2, 1000, 1000), peer(3, 1000, 900)]
    assert not quorum_at_risk(NodeId(1), Lsn(10), Lsn(10), peers, 101.0, 5.0)


def test_t6_three_nodes_one_down_the_lagging_one_is_at_risk() -> None:
    peers = [peer(2, 1000, 1000), peer(3, 1000, 1000, received_at=0.0)]  # 3 silent
    assert quorum_at_risk(NodeId(1), Lsn(10), Lsn(10), peers, 101.0, 5.0)


def test_t6_a_peer_behind_the_commit_position_is_not_caught_up() -> None:
    peers = [peer(2, 1000, 1000), peer(3, 500, 500)]
    assert quorum_at_risk(NodeId(1), Lsn(10), Lsn(10), peers, 101.0, 5.0)


def test_t6_a_caught_up_node_with_a_quorum_is_not_at_risk() -> None:
    assert not quorum_at_risk(NodeId(1), Lsn(1000), Lsn(1000), [peer(2, 1000, 1000)],
                              101.0, 5.0)
    assert not quorum_at_risk(NodeId(1), Lsn(0), Lsn(0), [], 0.0, 5.0)  # alone, no commit
