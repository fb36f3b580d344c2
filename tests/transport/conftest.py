"""A real WAL port on 127.0.0.1 over a real registry (FileBackend in tmp_path)."""

from __future__ import annotations

import functools
from pathlib import Path

import attrs
import pytest
import trio

from safekeeper_recovery.core import (
    AcceptorGreeting,
    AppendRequest,
    AppendResponse,
    Greeting,
    Lsn,
    NodeId,
    ProposerElected,
    TenantId,
    TenantTimelineId,
    Term,
    TermHistory,
    TermLsn,
    TimelineId,
    VoteRequest,
    VoteResponse,
)
from safekeeper_recovery.timeline import FileBackend, Timeline, TimelineParams, TimelineRegistry
from safekeeper_recovery.transport import (
    WalPushConnection,
    WalSenderInfo,
    WalSenders,
    WalServerConfig,
    open_wal_push,
    serve_wal,
)
from safekeeper_recovery.transport._auth import Authenticator
from safekeeper_recovery.transport._connections import ConnectionSlots

START = Lsn(0x100_0000)
SEG = 1 << 20
TENANT = TenantId(bytes(range(16)))
TIMELINE = TimelineId(bytes(range(16, 32)))
TTID = TenantTimelineId(TENANT, TIMELINE)
NO_COMMIT = Lsn(0)


def wal(n: int, seed: int = 0) -> bytes:
    return bytes((seed + i) % 251 for i in range(n))


@attrs.define
class WalNode:
    registry: TimelineRegistry
    url: str
    nursery: trio.Nursery
    senders: WalSenders

    @property
    def timeline(self) -> Timeline:
        return self.registry.get(TTID)

    def walsenders(self) -> list[WalSenderInfo]:
        """The timeline's running ``wal_stream`` connections (the WAL port's registry)."""
        return self.senders.of(TTID)


async def start_node(
    nursery: trio.Nursery,
    data_dir: Path,
    *,
    authenticator: Authenticator | None = None,
    config: WalServerConfig | None = None,
    slots: ConnectionSlots | None = None,
) -> WalNode:
    registry = TimelineRegistry(NodeId(1), FileBackend(data_dir))
    await nursery.start(registry.serve)
    await registry.create(TTID, TimelineParams(START, wal_seg_size=SEG))
    senders = WalSenders()
    port = await nursery.start(
        functools.partial(
            serve_wal,
            registry,
            authenticator or Authenticator(None),
            "127.0.0.1",
            0,
            config=config or WalServerConfig(keepalive_interval=0.2),
            slots=slots,
            senders=senders,
        )
    )
    return WalNode(registry, f"ws://127.0.0.1:{port}", nursery, senders)


@pytest.fixture
async def node(nursery: trio.Nursery, tmp_path: Path) -> WalNode:
    return await start_node(nursery, tmp_path)


async def elect(conn: WalPushConnection, term: Term, start: Lsn = START) -> None:
    """Greeting, vote and ProposerElected for ``term`` on a fresh timeline starting at start."""
    await conn.send(Greeting(TENANT, TIMELINE))
    assert isinstance(await conn.receive(), AcceptorGreeting)
    await conn.send(VoteRequest(term))
    vote = await conn.receive()
    assert isinstance(vote, VoteResponse)
    assert vote.vote_given
    history = TermHistory([*vote.term_history, TermLsn(term, vote.flush_lsn)])
    await conn.send(ProposerElected(term, vote.flush_lsn, history))


async def push(
    conn: WalPushConnection, term: Term, begin: Lsn, data: bytes, *, commit: Lsn = NO_COMMIT
) -> Lsn:
    """Send ``data`` as AppendRequests of at most 128 KiB; return the end position."""
    pos = begin
    for off in range(0, len(data), 128 * 1024):
        chunk = data[off : off + 128 * 1024]
        await conn.send(AppendRequest(term, pos, commit, Lsn(0), chunk))
        pos = pos + len(chunk)
    return pos


async def wait_flushed(conn: WalPushConnection, lsn: Lsn) -> AppendResponse:
    """Receive AppendResponses until one reports ``flush_lsn >= lsn``."""
    with trio.fail_after(10):
        while True:
            msg = await conn.receive()
            assert isinstance(msg, AppendResponse)
            if msg.flush_lsn >= lsn:
                return msg


@pytest.fixture
async def pushed(node: WalNode) -> tuple[WalNode, Lsn]:
    """A node whose timeline holds 300 KiB of term-1 WAL, 200 KiB of it committed."""
    async with open_wal_push(node.url, TENANT, TIMELINE) as conn:
        await elect(conn, 1)
        end = await push(conn, 1, START, wal(300 * 1024))
        await wait_flushed(conn, end)
        # commit_lsn rides on the next append (the proposer's usual way)
        await conn.send(AppendRequest(1, end, START + 200 * 1024, Lsn(0), b""))
        with trio.fail_after(10):
            await node.timeline.changed.wait_for(
                lambda: node.timeline.acceptor.commit_lsn == START + 200 * 1024
            )
    return node, end
