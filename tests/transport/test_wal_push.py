"""wal_push over a real socket, and the socket-free WalAcceptor core."""

from __future__ import annotations

import pytest
import trio

from safekeeper_recovery.core import (
    AcceptorError,
    AcceptorGreeting,
    AcceptorMessage,
    AppendRequest,
    AppendResponse,
    Greeting,
    Lsn,
    ProposerElected,
    ProposerMessage,
    TermHistory,
    TermLsn,
    VoteRequest,
    VoteResponse,
)
from safekeeper_recovery.timeline import run_wal_acceptor
from safekeeper_recovery.transport import (
    WalPushClosed,
    WalPushConnection,
    open_wal_push,
)

from .conftest import START, TENANT, TIMELINE, WalNode, elect, push, wait_flushed, wal


async def test_push_handshake_and_appends_get_growing_flush_lsn(node: WalNode) -> None:
    async with open_wal_push(node.url, TENANT, TIMELINE) as conn:
        await conn.send(Greeting(TENANT, TIMELINE))
        greeting = await conn.receive()
        assert isinstance(greeting, AcceptorGreeting)
        assert greeting.term == 0
        await conn.send(VoteRequest(1))
        vote = await conn.receive()
        assert isinstance(vote, VoteResponse)
        assert vote.vote_given
        assert vote.flush_lsn == START
        await elect(conn, 2)  # a second round: greeting again, vote in term 2
        flushes: list[Lsn] = []
        pos = START
        for i in range(3):
            pos = await push(conn, 2, pos, wal(64 * 1024, seed=i))
            resp = await wait_flushed(conn, pos)
            assert resp.term == 2
            flushes.append(resp.flush_lsn)
        assert flushes == [START + 64 * 1024 * k for k in (1, 2, 3)]
    assert node.timeline.acceptor.flush_lsn == START + 3 * 64 * 1024
    data = await node.timeline.read_wal(START, 64 * 1024)
    assert data == wal(64 * 1024, seed=0)


async def test_unflushed_appends_are_flushed_on_disconnect(node: WalNode) -> None:
    async with open_wal_push(node.url, TENANT, TIMELINE) as conn:
        await elect(conn, 1)
        end = await push(conn, 1, START, wal(10_000))
    with trio.fail_after(10):
        await node.timeline.changed.wait_for(lambda: node.timeline.acceptor.flush_lsn == end)


async def _receive_until_closed(conn: WalPushConnection) -> None:
    while True:
        await conn.receive()


async def test_recovery_push_is_not_a_proposer_and_yields_to_one_with_4010(
    node: WalNode,
) -> None:
    timeline = node.timeline
    async with open_wal_push(node.url, TENANT, TIMELINE, recovery=True) as rec:
        await elect(rec, 1)
        end = await push(rec, 1, START, wal(1000))
        await wait_flushed(rec, end)
        assert [r.kind for r in timeline.receivers.values()] == ["recovery"]
        assert timeline.snapshot().connected_proposers == 0
        async with open_wal_push(node.url, TENANT, TIMELINE) as prop:
            await prop.send(Greeting(TENANT, TIMELINE))
            await prop.receive()
            assert timeline.snapshot().connected_proposers == 1  # greeted: recovery stops
            # The recovery connection's next message is refused and the push closed.
            await rec.send(AppendRequest(1, end, Lsn(0), Lsn(0), b"x"))
            with trio.fail_after(10), pytest.raises(WalPushClosed) as closed:
                await _receive_until_closed(rec)
            assert closed.value.proposer_arrived, closed.value
            assert timeline.acceptor.flush_lsn == end  # nothing of it was taken
            assert timeline.recovery_yields == 1
            # The proposer goes on as if recovery had never been there.
            await prop.send(VoteRequest(2))
            assert isinstance(await prop.receive(), VoteResponse)
            assert [r.status for r in timeline.receivers.values() if r.kind == "proposer"
                    ] == ["voted"]
            history = TermHistory([*timeline.acceptor.term_history.entries, TermLsn(2, end)])
            await prop.send(ProposerElected(2, end, history))
            end = await push(prop, 2, end, wal(1000))
            await wait_flushed(prop, end)
            [receiver] = timeline.receivers.values()
            assert (receiver.kind, receiver.status, receiver.term) == ("proposer", "streaming", 2)
            assert timeline.snapshot().connected_proposers == 1
    with trio.fail_after(10):
        await timeline.changed.wait_for(lambda: not timeline.receivers)
    assert timeline.snapshot().connected_proposers == 0


async def test_acceptor_refusal_closes_4009_with_reason(node: WalNode) -> None:
    async with open_wal_push(node.url, TENANT, TIMELINE) as conn:
        await elect(conn, 1)
        await push(conn, 1, START + 100, b"gap")  # R7: creates a gap
        with trio.fail_after(10):
            try:
                while True:
                    await conn.receive()
            except WalPushClosed as e:
                closed = e
    assert closed.code == 4009
    assert "creates a gap" in closed.reason


async def test_run_wal_acceptor_in_process_flushes_and_closes_replies(node: WalNode) -> None:
    timeline = node.timeline
    msg_send, msg_recv = trio.open_memory_channel[ProposerMessage](256)
    rep_send, rep_recv = trio.open_memory_channel[AcceptorMessage](16)
    replies: list[AcceptorMessage] = []

    async def collect() -> None:
        async for msg in rep_recv:
            replies.append(msg)

    async with timeline.receiver("recovery", "test") as receiver, trio.open_nursery() as n:
        n.start_soon(collect)
        await msg_send.send(VoteRequest(1))
        # no Greeting needed in-process (recovery never sends one)
        history = TermHistory([TermLsn(0, START), TermLsn(1, START)])
        await msg_send.send(ProposerElected(1, START, history))
        for i in range(5):
            await msg_send.send(AppendRequest(1, START + 100 * i, Lsn(0), Lsn(0), wal(100, i)))
        await msg_send.aclose()
        with trio.fail_after(10):
            await run_wal_acceptor(timeline, receiver, msg_recv, rep_send, flush_interval=0.5)
        assert receiver.status == "connected"  # recovery is never marked as a proposer
    appends = [r for r in replies if isinstance(r, AppendResponse)]
    assert appends
    assert appends[-1].flush_lsn == START + 500
    assert timeline.acceptor.flush_lsn == START + 500


async def test_run_wal_acceptor_raises_the_processing_error(node: WalNode) -> None:
    timeline = node.timeline
    msg_send, msg_recv = trio.open_memory_channel[ProposerMessage](256)
    rep_send, rep_recv = trio.open_memory_channel[AcceptorMessage](16)
    async with timeline.receiver("recovery", "test") as receiver:
        await msg_send.send(AppendRequest(1, START, Lsn(0), Lsn(0), b"early"))
        with pytest.raises(AcceptorError, match="before ProposerElected"):
            await run_wal_acceptor(timeline, receiver, msg_recv, rep_send)
    # the reply channel was closed on the way out
    with trio.fail_after(1):
        assert [m async for m in rep_recv] == []


@pytest.mark.parametrize(("flush_interval", "expected_flushes"), [(3600.0, 1), (0.0, 10)])
async def test_appends_are_flushed_when_the_queue_drains_or_the_interval_is_up(
    node: WalNode, flush_interval: float, expected_flushes: int
) -> None:
    timeline = node.timeline
    msg_send, msg_recv = trio.open_memory_channel[ProposerMessage](256)
    rep_send, rep_recv = trio.open_memory_channel[AcceptorMessage](256)
    history = TermHistory([TermLsn(0, START), TermLsn(1, START)])
    await msg_send.send(VoteRequest(1))
    await msg_send.send(ProposerElected(1, START, history))
    for i in range(10):  # all queued up front: the queue drains only after the last one
        await msg_send.send(AppendRequest(1, START + 10 * i, Lsn(0), Lsn(0), wal(10, i)))
    await msg_send.aclose()
    async with timeline.receiver("recovery", "test") as receiver:
        with trio.fail_after(10):
            await run_wal_acceptor(
                timeline, receiver, msg_recv, rep_send, flush_interval=flush_interval
            )
    flushes = [m async for m in rep_recv if isinstance(m, AppendResponse)]
    assert len(flushes) == expected_flushes
    assert flushes[-1].flush_lsn == START + 100
