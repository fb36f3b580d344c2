"""Hostile input on the WAL port: each gets a clear refusal; the server keeps serving."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from trio_websocket import CloseReason, ConnectionClosed

from safekeeper_recovery.core import (
    MAX_MESSAGE_SIZE,
    AppendRequest,
    AppendResponse,
    Greeting,
    Lsn,
    TimelineId,
    VoteRequest,
    encode,
)
from safekeeper_recovery.transport import (
    WalConnectError,
    open_wal_push,
    open_wal_stream,
)
from safekeeper_recovery.transport._auth import Authenticator, generate_keypair, issue_token
from safekeeper_recovery.transport._wal_client import _open

from .conftest import (
    START,
    TENANT,
    TIMELINE,
    WalNode,
    elect,
    push,
    start_node,
    wait_flushed,
    wal,
)

T = str(TENANT)
L = str(TIMELINE)


async def handshake_status(url: str, target: str, token: str | None = None) -> tuple[int, str]:
    with pytest.raises(WalConnectError) as info:
        async with _open(url + target, token, 5.0):
            pass
    assert info.value.status is not None, info.value
    return info.value.status, info.value.body or ""


async def close_after(url: str, frames: list[bytes | str]) -> tuple[int, str]:
    """Send raw frames on wal_push; return the server's close code and reason."""
    reason: CloseReason | None = None
    async with _open(f"{url}/v1/tenant/{T}/timeline/{L}/wal_push", None, 5.0) as ws:
        try:
            for frame in frames:
                await ws.send_message(frame)
            with trio.fail_after(10):
                while True:
                    await ws.get_message()
        except ConnectionClosed as e:
            reason = e.reason
    assert reason is not None
    return reason.code, reason.reason or ""


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        (f"/v1/tenant/{T[:-1]}/timeline/{L}/wal_push", "invalid tenant id"),
        (f"/v1/tenant/{T}0/timeline/{L}/wal_push", "invalid tenant id"),
        (f"/v1/tenant/{T}/timeline/{L[:-1]}/wal_push", "invalid timeline id"),
        (f"/v1/tenant/../timeline/{L}/wal_push", "invalid tenant id"),
        (f"/v1/tenant/{T}/timeline/{L}/../wal_push", "invalid path"),
        (f"/v1/tenant/{T}/timeline/%2e%2e/wal_push", "invalid timeline id"),
        (f"/v1/tenant/{T}/timeline/{L}/wal_pull", "unknown WAL endpoint"),
        (f"/v1/tenant/{T}/timeline/{L}/wal_push?recovery=maybe", "invalid recovery"),
        (f"/v1/tenant/{T}/timeline/{L}/wal_push?debug=1", "unknown query parameter"),
        (f"/v1/tenant/{T}/timeline/{L}/wal_stream", "needs a start_lsn"),
        (f"/v1/tenant/{T}/timeline/{L}/wal_stream?start_lsn=zz", "invalid start_lsn"),
        (f"/v1/tenant/{T}/timeline/{L}/wal_stream?start_lsn=1/2/3", "invalid start_lsn"),
        (f"/v1/tenant/{T}/timeline/{L}/wal_stream?start_lsn=0/1&term=-1", "invalid term"),
        (
            f"/v1/tenant/{T}/timeline/{L}/wal_stream?start_lsn=0/1&start_lsn=0/2",
            "more than once",
        ),
    ],
)
async def test_bad_targets_are_rejected_400(node: WalNode, target: str, needle: str) -> None:
    status, body = await handshake_status(node.url, target)
    assert status == 400
    assert needle in body


async def test_unknown_timeline_is_rejected_404(node: WalNode) -> None:
    other = TimelineId(bytes(16))
    with pytest.raises(WalConnectError) as info:
        async with open_wal_stream(node.url, TENANT, other, START):
            pass
    assert info.value.status == 404
    assert "not found" in str(info.value)


async def test_connection_refused_is_a_clear_error() -> None:
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(WalConnectError) as info:
            async with open_wal_push(f"127.0.0.1:{port}", TENANT, TIMELINE):
                pass
    assert info.value.status is None
    assert "could not connect" in str(info.value)


async def test_hostile_messages_get_clear_close_codes_while_a_proposer_keeps_working(
    node: WalNode,
) -> None:
    url = node.url
    async with open_wal_push(url, TENANT, TIMELINE) as good:
        await elect(good, 1)
        pos = await push(good, 1, START, wal(1000))
        await wait_flushed(good, pos)

        code, reason = await close_after(url, [b"\xff garbage"])
        assert code == 1002
        assert "unknown" in reason
        code, reason = await close_after(url, [b""])
        assert code == 1002
        code, reason = await close_after(url, ["a text frame"])
        assert (code, reason) == (1003, "expected a binary message, got text")
        code, reason = await close_after(url, [b"a" + bytes(MAX_MESSAGE_SIZE)])
        assert code == 1009, reason
        code, reason = await close_after(url, [encode(VoteRequest(7))])
        assert code == 1002
        assert "expected Greeting" in reason
        code, reason = await close_after(
            url,
            [
                encode(Greeting(TENANT, TIMELINE)),
                encode(AppendRequest(9, pos, Lsn(0), Lsn(0), b"future term")),
            ],
        )
        assert code == 4009
        assert "before ProposerElected" in reason
        code, reason = await close_after(url, [encode(Greeting(TENANT, TimelineId(bytes(16))))])
        assert code == 4009
        assert "greeting for" in reason

        # the well-behaved proposer was never disturbed
        for i in range(3):
            pos = await push(good, 1, pos, wal(1000, seed=i))
            reply = await wait_flushed(good, pos)
            assert reply.term == 1


async def test_stale_term_append_gets_a_term_only_reply(node: WalNode) -> None:
    async with open_wal_push(node.url, TENANT, TIMELINE) as conn:
        await elect(conn, 3)
        await conn.send(AppendRequest(2, START, Lsn(0), Lsn(0), b"stale"))
        with trio.fail_after(5):
            reply = await conn.receive()
        assert reply == AppendResponse(3, Lsn(0), Lsn(0))
        # and the connection stays usable
        end = await push(conn, 3, START, wal(100))
        await wait_flushed(conn, end)


async def test_garbage_status_update_closes_the_stream_1002(node: WalNode) -> None:
    target = f"/v1/tenant/{T}/timeline/{L}/wal_stream?start_lsn={START}"
    async with _open(node.url + target, None, 5.0) as ws:
        await ws.send_message(b"r-short")
        with trio.fail_after(5):
            while ws.closed is None:
                try:
                    await ws.get_message()
                except ConnectionClosed:
                    break
    assert ws.closed is not None
    assert ws.closed.code == 1002


async def test_auth(nursery: trio.Nursery, tmp_path: Path) -> None:
    private, public = generate_keypair()
    node = await start_node(nursery, tmp_path, authenticator=Authenticator(public))
    other_tenant = type(TENANT)(bytes(range(1, 17)))

    with pytest.raises(WalConnectError) as info:
        async with open_wal_push(node.url, TENANT, TIMELINE):
            pass
    assert info.value.status == 401

    bad = issue_token(private, "tenant", other_tenant)
    with pytest.raises(WalConnectError) as info:
        async with open_wal_push(node.url, TENANT, TIMELINE, token=bad):
            pass
    assert info.value.status == 403

    with pytest.raises(WalConnectError) as info:
        async with open_wal_stream(node.url, TENANT, TIMELINE, START, token="not-a-jwt"):
            pass
    assert info.value.status == 401

    good = issue_token(private, "tenant", TENANT)
    async with open_wal_push(node.url, TENANT, TIMELINE, token=good) as conn:
        await elect(conn, 1)
        end = await push(conn, 1, START, wal(100))
        await wait_flushed(conn, end)
    peer = issue_token(private, "safekeeperdata")
    async with open_wal_stream(node.url, TENANT, TIMELINE, START, term=1, token=peer) as s:
        with trio.fail_after(5):
            msg = await s.receive()
        assert msg.wal_end == end
