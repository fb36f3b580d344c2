"""MessageQueue: the write pipeline's queue, bounded in bytes (rules Q1, Q2)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from safekeeper_recovery.core import AppendRequest, Lsn, VoteRequest
from safekeeper_recovery.timeline import MessageQueue
from safekeeper_recovery.timeline._message_queue import MESSAGE_COST, message_cost


def append(nbytes: int, at: int = 0) -> AppendRequest:
    return AppendRequest(1, Lsn(at), Lsn(0), Lsn(0), bytes(nbytes))


async def test_send_waits_for_room_in_bytes_and_receiving_makes_it() -> None:
    queue = MessageQueue(max_bytes=3 * (MESSAGE_COST + 1000))
    for i in range(3):
        await queue.send(append(1000, i))
    assert queue.queued_bytes == 3 * message_cost(append(1000))
    sent = trio.Event()

    async def fourth() -> None:
        await queue.send(append(1000, 3))
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fourth)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set(), "Q1: the fourth append must wait for room"
        first = queue.receive_nowait()
        await sent.wait()
    assert isinstance(first, AppendRequest)
    assert first.begin_lsn == 0


async def test_an_empty_queue_takes_one_message_larger_than_the_bound() -> None:
    queue = MessageQueue(max_bytes=100)
    with trio.fail_after(5):
        await queue.send(append(1 << 20))
    assert queue.queued_bytes > queue.max_bytes


async def test_many_small_messages_are_bounded_too() -> None:
    queue = MessageQueue(max_bytes=10 * MESSAGE_COST)
    for _ in range(10):
        await queue.send(VoteRequest(1))
    with trio.move_on_after(1) as waited:
        await queue.send(VoteRequest(1))
    assert waited.cancelled_caught


async def test_messages_come_out_in_order_then_end_of_channel() -> None:
    queue = MessageQueue()
    async with queue:
        for i in range(5):
            await queue.send(append(10, i))
    got = [await queue.receive() for _ in range(5)]
    assert [m.begin_lsn for m in got if isinstance(m, AppendRequest)] == list(range(5))
    assert queue.queued_bytes == 0
    with pytest.raises(trio.EndOfChannel):
        await queue.receive()
    with pytest.raises(trio.EndOfChannel):
        queue.receive_nowait()


async def test_receive_nowait_on_an_empty_open_queue_would_block() -> None:
    with pytest.raises(trio.WouldBlock):
        MessageQueue().receive_nowait()


async def test_a_sender_waiting_for_room_fails_once_the_consumer_is_gone() -> None:
    queue = MessageQueue(max_bytes=MESSAGE_COST + 10)
    await queue.send(append(10))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.testing.wait_all_tasks_blocked)
            failed: list[BaseException] = []

            async def blocked_send() -> None:
                try:
                    await queue.send(append(10))
                except trio.BrokenResourceError as e:
                    failed.append(e)

            nursery.start_soon(blocked_send)
            await trio.testing.wait_all_tasks_blocked()
            queue.close_receiving()
    assert failed, "the blocked send must fail, not spin or wait for ever"
