"""The live throttles (rules B1-B3) and the recovery slots (rules G1-G6), on trio's
autojump clock."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from safekeeper_recovery.core import TenantTimelineId
from safekeeper_recovery.recovery import RateLimit, RecoveryScheduler
from safekeeper_recovery.testing import MiB, make_ttid


async def test_b1_payers_share_the_rate(autojump_clock: trio.testing.MockClock) -> None:
    limit = RateLimit(float(MiB))
    done: list[float] = []

    async def payer() -> None:
        for _ in range(8):
            await limit.pay(MiB // 2)
        done.append(trio.current_time())

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(payer)
        nursery.start_soon(payer)
    # 8 MiB at 1 MiB/s, both together (the first 64 KiB came from the full bucket).
    assert max(done) - start == pytest.approx(8 - 1 / 16, abs=0.01)
    assert limit.bytes == 8 * MiB


async def test_b1_a_new_rate_applies_to_a_payer_already_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limit = RateLimit(float(MiB))
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limit.pay, 11 * MiB)  # ~11 s at 1 MiB/s
        await trio.sleep(1)
        limit.set_rate(10.0 * MiB)  # the other ~10 MiB in 1 s
    assert trio.current_time() - start == pytest.approx(2.0, abs=0.05)
    limit.set_rate(None)
    before = trio.current_time()
    await limit.pay(100 * MiB)
    assert trio.current_time() == before  # B3


async def test_b2_exempt_bytes_pass_and_a_payer_that_becomes_exempt_stops_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limit = RateLimit(float(MiB))
    before = trio.current_time()
    await limit.pay(50 * MiB, exempt=True)
    assert trio.current_time() == before
    assert (limit.bytes, limit.exempt_bytes) == (0, 50 * MiB)

    checks = 0

    async def at_risk() -> bool:
        nonlocal checks
        checks += 1
        return checks >= 3

    await limit.pay(100 * MiB, release=at_risk)  # 100 s at the rate
    assert trio.current_time() - before == pytest.approx(3.0, abs=0.05)


def queue_ttid(n: int) -> TenantTimelineId:
    return make_ttid(n)


async def test_g1_g2_slots_go_to_the_smallest_lag_and_at_risk_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slots = RecoveryScheduler(1)
    order: list[int] = []
    release = trio.Event()

    async def recover(n: int, lag: int, at_risk: bool = False) -> None:
        async with slots.slot(queue_ttid(n), at_risk=at_risk, lag_bytes=lag):
            order.append(n)
            if n == 1:
                await release.wait()
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(recover, 1, 10)
        await trio.sleep(0.1)
        for n, lag, risk in ((2, 900, False), (3, 50, False), (4, 5000, True)):
            nursery.start_soon(recover, n, lag, risk)
        await trio.sleep(0.1)
        assert slots.waiting == 3
        assert [slots.position(queue_ttid(n)) for n in (2, 3, 4)] == [3, 2, 1]
        assert slots.position(queue_ttid(1)) is None  # holds the slot
        release.set()
    assert order == [1, 4, 3, 2]


def _queued(slots: RecoveryScheduler, order: list[int], release: trio.Event,
            refresh: dict[int, Callable[[], Awaitable[tuple[bool, int] | None]]]
            ) -> Callable[[int, int], Awaitable[None]]:
    """``recover(n, lag)``: take a slot for timeline ``n`` (re-checked by ``refresh[n]``
    if given), note the order slots were granted in; timeline 1 holds its slot until
    ``release``."""

    async def recover(n: int, lag: int) -> None:
        async with slots.slot(queue_ttid(n), at_risk=False, lag_bytes=lag,
                              refresh=refresh.get(n)):
            order.append(n)
            if n == 1:
                await release.wait()

    return recover


async def test_g6_a_waiter_whose_quorum_turns_at_risk_while_it_waits_is_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slots = RecoveryScheduler(1, recheck=1.0)
    order: list[int] = []
    release = trio.Event()
    risk = {3: False}
    refreshes: list[float] = []

    async def refresh() -> tuple[bool, int] | None:
        refreshes.append(trio.current_time())
        return (risk[3], 5000)

    recover = _queued(slots, order, release, {3: refresh})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(recover, 1, 10)
        await trio.sleep(0.1)
        nursery.start_soon(recover, 2, 50)
        nursery.start_soon(recover, 3, 4000)
        await trio.sleep(3)
        assert [slots.position(queue_ttid(n)) for n in (2, 3)] == [1, 2]
        assert len(refreshes) >= 2  # every second or so, jittered by up to a quarter
        assert all(b - a <= 1.25 for a, b in itertools.pairwise(refreshes))
        risk[3] = True  # e.g. a caught-up peer went silent
        await trio.sleep(1.5)
        assert [slots.position(queue_ttid(n)) for n in (2, 3)] == [2, 1]
        release.set()
    assert order == [1, 3, 2]
    checks = len(refreshes)
    await trio.sleep(5)
    assert len(refreshes) == checks  # granted: no more re-checks


async def test_g6_a_waiter_queued_with_a_stale_lag_is_placed_by_its_lag_of_now(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # It joined while its donor was still being written to: 10 bytes then, 5000 now.
    slots = RecoveryScheduler(1, recheck=1.0)
    order: list[int] = []
    release = trio.Event()

    async def grown() -> tuple[bool, int] | None:
        return (False, 5000)

    recover = _queued(slots, order, release, {3: grown})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(recover, 1, 10)
        await trio.sleep(0.1)
        nursery.start_soon(recover, 2, 50)
        nursery.start_soon(recover, 3, 10)
        await trio.sleep(0.1)
        assert [slots.position(queue_ttid(n)) for n in (2, 3)] == [2, 1]
        await trio.sleep(2)
        assert [slots.position(queue_ttid(n)) for n in (2, 3)] == [1, 2]
        release.set()
    assert order == [1, 2, 3]


async def test_g3_raising_the_limit_hands_out_slots_and_g4_a_cancelled_waiter_holds_none(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slots = RecoveryScheduler(1)
    running: set[int] = set()
    hold = trio.Event()

    async def recover(n: int) -> None:
        async with slots.slot(queue_ttid(n), at_risk=False, lag_bytes=n):
            running.add(n)
            await hold.wait()

    async with trio.open_nursery() as nursery:
        for n in (1, 2, 3):
            nursery.start_soon(recover, n)
        await trio.sleep(0.1)
        assert len(running) == 1  # whichever trio ran first
        with trio.CancelScope() as scope:
            scope.cancel()
            async with slots.slot(queue_ttid(9), at_risk=True, lag_bytes=0):
                raise AssertionError("a cancelled waiter got a slot")
        assert slots.waiting == 2
        slots.set_limit(3)
        await trio.sleep(0.1)
        assert running == {1, 2, 3}
        hold.set()
    assert slots.running == set()
    assert slots.waiting == 0
