"""Rules F1-F4 and F6 of core/_schedule.py: who gets the next recovery slot."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from safekeeper_recovery.core import (
    QueueEntry,
    TenantId,
    TenantTimelineId,
    TimelineId,
    recovery_order,
)


def ttid(n: int) -> TenantTimelineId:
    return TenantTimelineId(TenantId(bytes(16)), TimelineId(n.to_bytes(16, "big")))


def names(order: list[QueueEntry]) -> list[int]:
    return [int.from_bytes(e.ttid.timeline_id.raw, "big") for e in order]


def test_f1_q2_at_risk_first_then_smallest_lag() -> None:
    queue = [QueueEntry(ttid(1), False, 500, 0.0), QueueEntry(ttid(2), False, 10, 0.0),
             QueueEntry(ttid(3), True, 9000, 0.0), QueueEntry(ttid(4), False, 100, 0.0)]
    assert names(recovery_order(queue, 1.0)) == [3, 2, 4, 1]


def test_f3_an_aged_waiter_goes_ahead_of_smaller_lags_but_not_of_risk() -> None:
    queue = [QueueEntry(ttid(1), False, 10**9, 0.0), QueueEntry(ttid(2), False, 10, 50.0),
             QueueEntry(ttid(3), True, 10**6, 55.0)]
    assert names(recovery_order(queue, 59.0, ageing=60.0)) == [3, 2, 1]
    assert names(recovery_order(queue, 60.0, ageing=60.0)) == [3, 1, 2]


def test_f4_ties_by_wait_then_id() -> None:
    queue = [QueueEntry(ttid(2), False, 10, 1.0), QueueEntry(ttid(1), False, 10, 1.0),
             QueueEntry(ttid(3), False, 10, 0.5)]
    assert names(recovery_order(queue, 2.0)) == [3, 1, 2]


def test_f6_a_waiter_turning_at_risk_goes_first_and_keeps_its_age() -> None:
    small = QueueEntry(ttid(1), False, 10, 5.0)
    big = QueueEntry(ttid(2), False, 10**6, 0.0)
    assert names(recovery_order([small, big], 6.0)) == [1, 2]
    risky = big.revised(at_risk=True, lag_bytes=2 * 10**6)
    assert (risky.since, risky.lag_bytes, risky.at_risk) == (0.0, 2 * 10**6, True)
    assert names(recovery_order([small, risky], 6.0)) == [2, 1]
    # Revised back, it has still waited since 0: aged at 60 s, ahead of the small lag.
    calm = risky.revised(at_risk=False, lag_bytes=10**6)
    assert names(recovery_order([small, calm], 59.0, ageing=60.0)) == [1, 2]
    assert names(recovery_order([small, calm], 60.0, ageing=60.0)) == [2, 1]


@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=30))
def test_f3_no_waiter_starves_behind_a_stream_of_small_lags(lags: list[int]) -> None:
    """A big lag that joined at 0 is served once it aged, whatever newcomers keep coming:
    each slot freed at t=0,1,2,... goes to the first in order; newcomers with tiny lags
    join every second."""
    waiting = [QueueEntry(ttid(1000), False, 10**12, 0.0)]
    waiting += [QueueEntry(ttid(i), False, lag, 0.0) for i, lag in enumerate(lags)]
    for t in range(200):
        waiting.append(QueueEntry(ttid(2000 + t), False, 1, float(t)))
        first = recovery_order(waiting, float(t), ageing=60.0)[0]
        if first.ttid == ttid(1000):
            assert t <= 60 + len(lags)
            return
        waiting.remove(first)
    raise AssertionError("F3: the big lag was never served")
