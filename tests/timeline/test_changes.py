"""The node-wide change feed: cursors, resets, deletions, the long-poll wait, registry wiring."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from safekeeper_recovery.core import (
    AppendRequest,
    Lsn,
    NodeId,
    PeerInfo,
    ProposerElected,
    TermHistory,
    VoteRequest,
)
from safekeeper_recovery.testing import make_ttid
from safekeeper_recovery.timeline import (
    ChangeFeed,
    MemoryBackend,
    TimelineParams,
    TimelineRegistry,
)

START = Lsn(0x100_0000)
SEG = 1 << 20




def test_first_question_is_a_reset_with_a_cursor() -> None:
    feed = ChangeFeed(session="s1")
    feed.record(make_ttid(1))
    answer = feed.since(None, 0)
    assert answer.reset
    assert (answer.session, answer.cursor) == ("s1", 1)
    assert answer.changed == answer.deleted == ()


def test_changes_after_a_cursor_newest_first_each_once() -> None:
    feed = ChangeFeed(session="s")
    for n in (1, 2, 3):
        feed.record(make_ttid(n))
    cursor = feed.since("s", 0).cursor
    assert feed.since("s", cursor).empty
    feed.record(make_ttid(2))
    feed.record(make_ttid(1))
    feed.record(make_ttid(2))
    answer = feed.since("s", cursor)
    assert not answer.reset
    assert answer.changed == (make_ttid(2), make_ttid(1))
    assert answer.cursor == cursor + 3
    assert feed.since("s", 1).changed == (make_ttid(2), make_ttid(1), make_ttid(3))


def test_deletions_are_reported_and_leave_the_changed_list() -> None:
    feed = ChangeFeed(session="s")
    feed.record(make_ttid(1))
    feed.record(make_ttid(2))
    cursor = feed.seq
    feed.record(make_ttid(1))
    feed.record_deleted(make_ttid(1))
    answer = feed.since("s", cursor)
    assert answer.changed == ()
    assert answer.deleted == (make_ttid(1),)
    # Created again: a change again, and the old deletion still stands for old cursors.
    feed.record(make_ttid(1))
    assert feed.since("s", cursor).changed == (make_ttid(1),)
    assert feed.since("s", cursor).deleted == (make_ttid(1),)


@pytest.mark.parametrize(("session", "cursor"), [("other", 0), ("s", 99)])
def test_a_cursor_of_another_session_or_from_the_future_is_reset(session: str,
                                                                 cursor: int) -> None:
    feed = ChangeFeed(session="s")
    feed.record(make_ttid(1))
    assert feed.since(session, cursor).reset


def test_a_cursor_older_than_the_kept_deletions_is_reset() -> None:
    feed = ChangeFeed(session="s", max_deletions=2)
    for n in (1, 2, 3):
        feed.record(make_ttid(n))
    old = feed.seq
    for n in (1, 2):
        feed.record_deleted(make_ttid(n))
    assert feed.since("s", old).deleted == (make_ttid(2), make_ttid(1))  # both still kept
    recent = feed.seq
    feed.record_deleted(make_ttid(3))  # drops the deletion of 1, which `old` never saw
    assert feed.since("s", old).reset
    assert feed.since("s", recent).deleted == (make_ttid(3),)


async def test_wait_since_returns_on_the_next_change() -> None:
    feed = ChangeFeed(session="s")
    feed.record(make_ttid(1))
    cursor = feed.seq
    answers = []

    async def poll() -> None:
        answers.append(await feed.wait_since("s", cursor, timeout=60))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked()
        assert not answers
        assert feed.statistics()["waiters"] == 1
        feed.record(make_ttid(2))
    assert [a.changed for a in answers] == [(make_ttid(2),)]
    assert feed.statistics()["waiters"] == 0


async def test_wait_since_answers_at_once_when_there_is_news(
    autojump_clock: trio.testing.MockClock,
) -> None:
    feed = ChangeFeed(session="s")
    feed.record(make_ttid(1))
    start = trio.current_time()
    assert (await feed.wait_since("s", 0, timeout=60)).changed == (make_ttid(1),)
    assert (await feed.wait_since(None, 0, timeout=60)).reset
    assert trio.current_time() == start


async def test_wait_since_times_out_with_nothing(autojump_clock: trio.testing.MockClock) -> None:
    feed = ChangeFeed(session="s")
    start = trio.current_time()
    answer = await feed.wait_since("s", 0, timeout=30)
    assert answer.empty
    assert trio.current_time() - start == pytest.approx(30)


async def test_the_registry_numbers_every_change_of_every_timeline(
    nursery: trio.Nursery,
) -> None:
    reg = TimelineRegistry(NodeId(1), MemoryBackend())
    await nursery.start(reg.serve)
    feed = reg.feed
    session = feed.session
    tl, _ = await reg.create(make_ttid(1), TimelineParams(START, SEG))
    await reg.create(make_ttid(2), TimelineParams(START, SEG))
    assert feed.since(session, 0).changed == (make_ttid(2), make_ttid(1))  # created = changed

    cursor = feed.seq
    await tl.process(VoteRequest(1))
    await tl.process(ProposerElected(1, START, TermHistory.of((0, START), (1, START))))
    await tl.process(AppendRequest(1, START, Lsn(0), Lsn(0), b"x" * 100))
    assert feed.since(session, cursor).changed == (make_ttid(1),)

    cursor = feed.seq
    await tl.record_peer_info(PeerInfo(NodeId(2), 5, 5, START + 10, START, "http://x",
                                       "ws://x", trio.current_time()))
    assert feed.since(session, cursor).changed == (make_ttid(1),)  # peer news wakes sidecars too

    cursor = feed.seq
    assert await reg.delete(make_ttid(1))
    tl.changed.notify()  # a straggler of the deleted timeline is not news
    answer = feed.since(session, cursor)
    assert (answer.changed, answer.deleted) == ((), (make_ttid(1),))
