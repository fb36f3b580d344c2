"""Shared set-up for the HTTP API tests: a real registry (FileBackend) behind the app."""

from __future__ import annotations

from pathlib import Path

import attrs
import httpx
import trio
from starlette.applications import Starlette

from safekeeper_recovery.core import (
    AppendRequest,
    Lsn,
    NodeId,
    ProposerElected,
    Term,
    TermHistory,
    TermLsn,
    VoteRequest,
    VoteResponse,
)
from safekeeper_recovery.timeline import FileBackend, Timeline, TimelineRegistry
from safekeeper_recovery.transport import (
    DEFAULT_MAX_BODY_SIZE,
    NodeContext,
    RecoveryAdmin,
    build_http_app,
)
from safekeeper_recovery.transport._auth import Authenticator

# One set of ids for the transport tests (re-exported for the HTTP tests).
from .conftest import SEG as SEG
from .conftest import START as START
from .conftest import TENANT as TENANT
from .conftest import TIMELINE as TIMELINE
from .conftest import TTID as TTID

TL_PATH = f"/v1/tenant/{TENANT}/timeline/{TIMELINE}"
CREATE_BODY = {"timeline_id": str(TIMELINE), "start_lsn": str(START), "wal_seg_size": SEG}


def wal(n: int, seed: int = 0) -> bytes:
    return bytes((seed + i) % 251 for i in range(n))


@attrs.define
class HttpNode:
    registry: TimelineRegistry
    ctx: NodeContext
    app: Starlette
    client: httpx.AsyncClient

    @property
    def timeline(self) -> Timeline:
        return self.registry.get(TTID)


def asgi_client(app: Starlette, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://node", headers=headers
    )


async def start_http_node(
    nursery: trio.Nursery,
    data_dir: Path,
    *,
    node_id: int = 1,
    authenticator: Authenticator | None = None,
    recovery: RecoveryAdmin | None = None,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
) -> HttpNode:
    registry = TimelineRegistry(NodeId(node_id), FileBackend(data_dir))
    await nursery.start(registry.serve)
    ctx = NodeContext(
        registry=registry,
        node_id=NodeId(node_id),
        http_addr=f"http://127.0.0.1:{7000 + node_id}",
        wal_addr=f"ws://127.0.0.1:{5000 + node_id}",
        authenticator=authenticator or Authenticator(None),
        recovery=recovery,
        max_body_size=max_body_size,
    )
    app = build_http_app(ctx)
    return HttpNode(registry, ctx, app, asgi_client(app))


async def write_wal(timeline: Timeline, term: Term, data: bytes, *, commit: Lsn | None = None
                    ) -> Lsn:
    """Elect ``term`` on ``timeline`` directly and append ``data`` at its flush position."""
    vote = await timeline.process(VoteRequest(term))
    assert isinstance(vote, VoteResponse)
    assert vote.vote_given
    history = TermHistory([*vote.term_history, TermLsn(term, vote.flush_lsn)])
    await timeline.process(ProposerElected(term, vote.flush_lsn, history))
    await timeline.process(
        AppendRequest(term, vote.flush_lsn, commit or Lsn(0), Lsn(0), data)
    )
    return vote.flush_lsn + len(data)
