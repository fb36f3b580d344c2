"""The sidecar is event-driven: it long-polls the node's change feed instead of polling
every timeline, so an idle node costs it no status reads; a change wakes exactly the
timeline that changed; created and deleted timelines gain and lose supervisors.

A real hypercorn server on loopback over a real registry, the sidecar in the same trio run
(so the test can read its engine), every request counted by path.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable
from pathlib import Path

import trio
from starlette.types import ASGIApp, Receive, Scope, Send

from safekeeper_recovery.core import NodeId, PeerInfo, TenantTimelineId, TimelineId
from safekeeper_recovery.recovery import RecoveryConfig, RecoveryEngine
from safekeeper_recovery.sidecar import serve_sidecar
from safekeeper_recovery.testing import wait_until
from safekeeper_recovery.timeline import TimelineParams
from safekeeper_recovery.transport import serve_http

from ._http_support import SEG, START, TENANT, TL_PATH, TTID, HttpNode, start_http_node

FEED = "/v1/timelines/changes"
OTHER = TenantTimelineId(TENANT, TimelineId(b"\x07" * 16))


class Counting:
    """An ASGI wrapper counting the HTTP requests the app received, by path (counted on
    arrival: a client may act on an answer before the app's call has returned)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.received: collections.Counter[str] = collections.Counter()
        self.changed = trio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.received[scope["path"]] += 1
            self.changed.set()
            self.changed = trio.Event()
        await self.app(scope, receive, send)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await self.changed.wait()



async def start_node_and_sidecar(
    nursery: trio.Nursery, tmp_path: Path
) -> tuple[HttpNode, Counting, RecoveryEngine]:
    node = await start_http_node(nursery, tmp_path)
    await node.client.aclose()
    await node.registry.create(TTID, TimelineParams(START, SEG))
    counting = Counting(node.app)
    port: int = await nursery.start(serve_http, counting, "127.0.0.1", 0)
    sidecar = functools.partial(
        serve_sidecar, f"http://127.0.0.1:{port}", config=RecoveryConfig(connect_timeout=1.0),
        min_interval=0.0, long_poll=0.2)
    engine: RecoveryEngine = await nursery.start(sidecar)
    return node, counting, engine


def idle(engine: RecoveryEngine, ttid: TenantTimelineId) -> bool:
    """The supervisor of ``ttid`` looked at least once and found nothing to do."""
    status = engine.statuses.get(ttid)
    return status is not None and status.evaluations >= 1 and status.state == "idle"


async def test_an_idle_node_costs_the_sidecar_no_status_reads(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    _, counting, engine = await start_node_and_sidecar(nursery, tmp_path)
    await wait_until(lambda: idle(engine, TTID), 10, poll=0.01)
    evaluations = dict(engine.evaluations)
    reads = counting.received[TL_PATH]
    polls = counting.received[FEED]
    # Five long polls run out (0.2 s each) with nothing to report (a sixth arrives)...
    await counting.wait_for(lambda: counting.received[FEED] >= polls + 6)
    # ... and the supervisor never looked again.
    assert engine.evaluations == evaluations == {"start": 1}
    assert counting.received[TL_PATH] == reads == 1


async def test_a_change_wakes_its_timeline_and_new_timelines_get_a_supervisor(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    node, counting, engine = await start_node_and_sidecar(nursery, tmp_path)
    await wait_until(lambda: idle(engine, TTID), 10, poll=0.01)

    # A peer ahead of us in a newer term: the supervisor must wake and try it as a donor
    # (nothing listens at its WAL address, so the attempt fails and backs off).
    now = trio.current_time()
    await node.timeline.record_peer_info(PeerInfo(
        NodeId(2), 3, 3, START + 1000, START, "http://127.0.0.1:9", "ws://127.0.0.1:9", now))
    await wait_until(lambda: engine.evaluations.get("change", 0) >= 1, 10, poll=0.01)
    await wait_until(lambda: engine.statuses[TTID].last_outcome is not None, 10, poll=0.01)
    assert engine.statuses[TTID].last_outcome == "donor_error"

    # A timeline created while the sidecar runs is supervised without any re-listing.
    listings = counting.received["/v1/timelines"]
    await node.registry.create(OTHER, TimelineParams(START, SEG))
    await wait_until(lambda: idle(engine, OTHER), 10, poll=0.01)
    assert counting.received["/v1/timelines"] == listings

    # A deleted one loses its supervisor.
    assert await node.registry.delete(OTHER)
    await wait_until(lambda: OTHER not in engine.statuses, 10, poll=0.01)
