"""wal_stream over a real socket: how far it streams, term checks, chunking, keepalives."""

from __future__ import annotations

import pytest
import trio

from safekeeper_recovery.core import (
    MAX_SEND_SIZE,
    Keepalive,
    Lsn,
    StatusUpdate,
    WalData,
)
from safekeeper_recovery.transport import (
    WalSenderFeedback,
    WalStreamClosed,
    WalStreamConnection,
    open_wal_push,
    open_wal_stream,
)

from .conftest import SEG, START, TENANT, TIMELINE, WalNode, elect, push, wait_flushed, wal


async def read_until(stream: WalStreamConnection, end: Lsn) -> tuple[list[WalData], bytes]:
    """Receive WalData up to ``end``; return the chunks and the concatenated bytes."""
    chunks: list[WalData] = []
    with trio.fail_after(10):
        while not chunks or chunks[-1].end_lsn < end:
            msg = await stream.receive()
            if isinstance(msg, WalData):
                assert msg.start_lsn == (chunks[-1].end_lsn if chunks else msg.start_lsn)
                chunks.append(msg)
    return chunks, b"".join(c.data for c in chunks)


async def expect_closed(stream: WalStreamConnection) -> WalStreamClosed:
    with trio.fail_after(10):
        while True:
            try:
                await stream.receive()
            except WalStreamClosed as e:
                return e


async def test_stream_with_term_goes_up_to_flush_lsn(pushed: tuple[WalNode, Lsn]) -> None:
    node, end = pushed
    async with open_wal_stream(node.url, TENANT, TIMELINE, START, term=1) as stream:
        chunks, data = await read_until(stream, end)
        assert data == wal(300 * 1024)
        assert chunks[-1].end_lsn == end
        with trio.fail_after(5):
            msg = await stream.receive()
        assert isinstance(msg, Keepalive)  # nothing more: uncommitted WAL included, then idle
        assert msg.wal_end == end


async def test_stream_without_term_stops_at_commit_lsn(pushed: tuple[WalNode, Lsn]) -> None:
    node, _ = pushed
    commit = START + 200 * 1024
    async with open_wal_stream(node.url, TENANT, TIMELINE, START) as stream:
        chunks, data = await read_until(stream, commit)
        assert chunks[-1].end_lsn == commit
        assert data == wal(300 * 1024)[: 200 * 1024]
        with trio.fail_after(5):
            msg = await stream.receive()
        assert msg == Keepalive(commit, msg.timestamp_us, reply_requested=True)


async def test_keepalive_after_idle_interval(pushed: tuple[WalNode, Lsn]) -> None:
    node, end = pushed
    async with open_wal_stream(node.url, TENANT, TIMELINE, end + 1000, term=1) as stream:
        # a start beyond the end is fine: the sender waits and keeps the stream alive
        t0 = trio.current_time()
        with trio.fail_after(5):
            first = await stream.receive()
            second = await stream.receive()
        assert isinstance(first, Keepalive)
        assert isinstance(second, Keepalive)
        assert trio.current_time() - t0 >= 0.2 * 2 * 0.9  # keepalive_interval=0.2 in conftest


async def test_term_change_while_waiting_closes_the_stream(node: WalNode) -> None:
    async with open_wal_push(node.url, TENANT, TIMELINE) as conn:
        await elect(conn, 5)
        end = await push(conn, 5, START, wal(5000))
        await wait_flushed(conn, end)
    async with open_wal_stream(node.url, TENANT, TIMELINE, START, term=5) as stream:
        await read_until(stream, end)
        await node.timeline.bump_term(6)
        closed = await expect_closed(stream)
    assert closed.code == 4000
    assert closed.reason == "term changed: requested 5, now 6"
    assert closed.term_changed


async def test_stale_term_fails_to_acquire_term(pushed: tuple[WalNode, Lsn]) -> None:
    node, _ = pushed
    await node.timeline.bump_term(2)
    async with open_wal_stream(node.url, TENANT, TIMELINE, START, term=1) as stream:
        closed = await expect_closed(stream)
    assert closed.code == 4000
    assert closed.reason == "failed to acquire term 1, current term 2"
    assert closed.term_changed


async def test_chunks_never_cross_a_segment(node: WalNode) -> None:
    total = SEG + SEG // 2 + 777
    async with open_wal_push(node.url, TENANT, TIMELINE) as conn:
        await elect(conn, 1)
        end = await push(conn, 1, START, wal(total, seed=3))
        await wait_flushed(conn, end)
    begin = START + 1000  # not page-aligned, so the first chunk is odd-sized
    async with open_wal_stream(node.url, TENANT, TIMELINE, begin, term=1) as stream:
        chunks, data = await read_until(stream, end)
    assert data == wal(total, seed=3)[1000:]
    boundary = START + SEG
    assert any(c.end_lsn == boundary for c in chunks)
    for c in chunks:
        assert 0 < len(c.data) <= MAX_SEND_SIZE
        assert c.start_lsn.segment_number(SEG) == (c.end_lsn - 1).segment_number(SEG)


async def test_requested_wal_below_the_start_was_removed(pushed: tuple[WalNode, Lsn]) -> None:
    node, _ = pushed
    async with open_wal_stream(node.url, TENANT, TIMELINE, Lsn(0x100), term=1) as stream:
        closed = await expect_closed(stream)
    assert closed.code == 4001  # WalRemoved: its own code, not the term's 4000
    assert "was removed" in closed.reason
    assert closed.wal_removed
    assert not closed.term_changed


async def test_status_updates_are_recorded_and_dropped_on_exit(
    pushed: tuple[WalNode, Lsn],
) -> None:
    node, end = pushed
    timeline = node.timeline
    async with open_wal_stream(node.url, TENANT, TIMELINE, START, term=1) as stream:
        await read_until(stream, end)
        await stream.send_status(StatusUpdate(end, end, Lsn(0), 123))
        with trio.fail_after(5):
            await timeline.changed.wait_for(
                lambda: any(w.feedback is not None for w in node.walsenders())
            )
        (info,) = node.walsenders()
        assert info.feedback == WalSenderFeedback(end, end, Lsn(0), 123)
        assert info.sent_lsn == end
        assert info.to_json()["feedback"] == {
            "write_lsn": str(end),
            "flush_lsn": str(end),
            "apply_lsn": "0/0",
            "timestamp_us": 123,
        }
    with trio.fail_after(5):
        await timeline.changed.wait_for(lambda: not node.walsenders())


async def test_deleting_the_timeline_closes_4004(pushed: tuple[WalNode, Lsn]) -> None:
    node, end = pushed
    async with open_wal_stream(node.url, TENANT, TIMELINE, START, term=1) as stream:
        await read_until(stream, end)
        assert await node.registry.delete(node.timeline.ttid)
        closed = await expect_closed(stream)
    assert closed.code == 4004
    assert closed.reason == "timeline deleted"


@pytest.mark.parametrize("term", [None, 1])
async def test_new_wal_is_streamed_as_it_arrives(node: WalNode, term: int | None) -> None:
    async with open_wal_push(node.url, TENANT, TIMELINE) as conn:
        await elect(conn, 1)
        async with open_wal_stream(node.url, TENANT, TIMELINE, START, term=term) as stream:
            pos = START
            for i in range(3):
                new_end = await push(conn, 1, pos, wal(1000, seed=i), commit=pos)
                await wait_flushed(conn, new_end)
                # the commit_lsn of append i covers append i-1, so commit mode lags one
                visible = new_end if term is not None else pos
                if visible > START:
                    _, data = await read_until(stream, visible)
                    assert data[-1000:] == wal(1000, seed=i if term is not None else i - 1)
                pos = new_end
