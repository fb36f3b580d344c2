"""The proposer's seams over the real WAL port (``transport``'s WebSocket clients)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ..core import Keepalive, Lsn, TenantId, Term, TimelineId, WalData
from ..transport import open_wal_push, open_wal_stream
from ._connection import Connect, FetchWal, SafekeeperConnection

__all__ = ["websocket_connector", "websocket_fetcher"]


def websocket_connector(
    tenant_id: TenantId,
    timeline_id: TimelineId,
    *,
    token: str | None = None,
    connect_timeout: float = 10.0,
) -> Connect:
    """A :data:`Connect` opening ``wal_push`` on the WAL port URL it is given."""

    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[SafekeeperConnection]:
        async with open_wal_push(
            url, tenant_id, timeline_id, token=token, connect_timeout=connect_timeout
        ) as conn:
            yield conn

    return connect


def websocket_fetcher(
    tenant_id: TenantId,
    timeline_id: TimelineId,
    *,
    token: str | None = None,
    connect_timeout: float = 10.0,
    idle_timeout: float = 30.0,
) -> FetchWal:
    """A :data:`FetchWal` reading ``wal_stream?start_lsn=..&term=..`` until ``end``.

    Raises ``trio.TooSlowError`` when no WAL arrives for ``idle_timeout`` seconds (the
    source does not hold the range), or the client's errors.
    """

    async def fetch(url: str, start: Lsn, end: Lsn, term: Term) -> bytes:
        parts: list[bytes] = []
        pos = start
        async with open_wal_stream(
            url,
            tenant_id,
            timeline_id,
            start,
            term=term,
            token=token,
            connect_timeout=connect_timeout,
        ) as stream:
            while pos < end:
                with trio.fail_after(idle_timeout):
                    msg = await stream.receive()
                    while isinstance(msg, Keepalive):
                        msg = await stream.receive()
                assert isinstance(msg, WalData)
                if msg.start_lsn != pos:
                    raise ValueError(f"WAL stream jumped from {pos} to {msg.start_lsn}")
                data = msg.data[: end - pos]
                parts.append(data)
                pos += len(data)
        return b"".join(parts)

    return fetch
