"""Peer exchange between in-process nodes (real registries, HTTP apps over ASGI)."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path

import attrs
import httpx
import pytest
import trio
from starlette.applications import Starlette

from safekeeper_recovery.core import AppendRequest, Lsn, NodeId, TenantTimelineId, TimelineId
from safekeeper_recovery.timeline import (
    MemoryBackend,
    PeerHub,
    TimelineParams,
    TimelineRegistry,
)
from safekeeper_recovery.transport import (
    HttpPeerExchange,
    PeerInfoBatch,
    PeerTimelineInfo,
    SafekeeperClient,
    apply_peer_info_batch,
    serve_peer_exchange,
)
from safekeeper_recovery.transport._peer_exchange import BUSY_AFTER

from ._http_support import (
    CREATE_BODY,
    SEG,
    START,
    TENANT,
    TL_PATH,
    HttpNode,
    asgi_client,
    start_http_node,
    wal,
    write_wal,
)

Target = Starlette | httpx.AsyncBaseTransport


def in_process(apps: dict[str, Target]) -> Callable[[str], SafekeeperClient]:
    """A client factory routing each peer URL to an app (or a mock transport)."""

    def factory(url: str) -> SafekeeperClient:
        target = apps[url]
        transport = target if isinstance(target, httpx.AsyncBaseTransport) else \
            httpx.ASGITransport(app=target)
        return SafekeeperClient(url, timeout=10.0, transport=transport)

    return factory


async def two_nodes(nursery: trio.Nursery, tmp_path: Path) -> tuple[HttpNode, HttpNode]:
    nodes = []
    for node_id in (1, 2):
        node = await start_http_node(nursery, tmp_path / f"sk{node_id}", node_id=node_id)
        async with node.client as c:
            assert (await c.post(f"/v1/tenant/{TENANT}/timeline", json=CREATE_BODY)
                    ).status_code == 201
        nodes.append(node)
    return nodes[0], nodes[1]


async def start_exchange(
    nursery: trio.Nursery, source: HttpNode, peers: dict[NodeId, str],
    apps: dict[str, Target], interval: float = 0.02,
) -> HttpPeerExchange:
    exchange = HttpPeerExchange(peers, client_factory=in_process(apps))
    await nursery.start(exchange.serve)
    await nursery.start(functools.partial(
        serve_peer_exchange, source.registry, exchange, source.ctx.node_id,
        source.ctx.http_addr, source.ctx.wal_addr, interval=interval,
    ))
    return exchange


async def test_exchange_updates_peers_and_commit_follows_equal_last_log_term(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    a, b = await two_nodes(nursery, tmp_path)
    data = wal(10_000)
    await write_wal(a.timeline, 1, data, commit=START + 8000)
    await write_wal(b.timeline, 1, data)  # same WAL, but B does not know what is committed
    assert a.timeline.acceptor.commit_lsn == START + 8000
    assert b.timeline.acceptor.commit_lsn < START + 8000

    t0 = trio.current_time()
    await start_exchange(nursery, a, {NodeId(2): "http://b"}, {"http://b": b.app})
    await start_exchange(nursery, b, {NodeId(1): "http://a"}, {"http://a": a.app})
    with trio.fail_after(5):
        await b.timeline.changed.wait_for(
            lambda: b.timeline.acceptor.commit_lsn == START + 8000
        )
        await a.timeline.changed.wait_for(lambda: NodeId(2) in a.timeline.peers)
    info = b.timeline.peers[NodeId(1)]
    assert t0 <= info.received_at <= trio.current_time()
    assert info.http_addr == a.ctx.http_addr
    assert info.wal_addr == a.ctx.wal_addr
    assert info.last_log_term == 1
    assert info.flush_lsn == START + len(data)
    # Unchanged info is not resent: heartbeats confirm it, so the entry stays current by
    # the receiver's clock. That wakes no waiters (by design: idle timelines stay idle),
    # so poll with a deadline.
    first = info.received_at
    with trio.fail_after(5):
        while b.timeline.current_peers()[0].received_at <= first:  # noqa: ASYNC110
            await trio.sleep(0.05)
    assert b.timeline.peers[NodeId(1)].received_at == first, "the entry was not resent"
    async with asgi_client(b.app) as c:
        [peer] = (await c.get(TL_PATH)).json()["peers"]
    assert peer["sk_id"] == 1
    assert peer["commit_lsn"] == str(START + 8000)


async def test_commit_does_not_follow_a_peer_with_other_last_log_term(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    a, b = await two_nodes(nursery, tmp_path)
    await write_wal(a.timeline, 2, wal(10_000), commit=START + 8000)
    await write_wal(b.timeline, 1, wal(10_000))
    exchange = HttpPeerExchange({NodeId(2): "http://b"}, client_factory=in_process(
        {"http://b": b.app}))
    async with trio.open_nursery() as inner:
        await inner.start(functools.partial(
            serve_peer_exchange, a.registry, exchange, NodeId(1), a.ctx.http_addr,
            a.ctx.wal_addr,
        ))  # without exchange.serve, publish pushes and waits: the first batch is in
        inner.cancel_scope.cancel()
    await exchange.aclose()
    assert NodeId(1) in b.timeline.peers
    assert b.timeline.acceptor.commit_lsn < START + 8000


class Counting(httpx.AsyncBaseTransport):
    """Wraps a transport; ``reached`` is set once ``target`` requests went through it."""

    def __init__(self, inner: httpx.AsyncBaseTransport, target: int) -> None:
        self.inner = inner
        self.target = target
        self.count = 0
        self.reached = trio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.count += 1
        if self.count >= self.target:
            self.reached.set()
        return await self.inner.handle_async_request(request)


def failing_transport() -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    return httpx.MockTransport(handler)


async def test_failing_peer_is_logged_once_and_never_stops_the_loop(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "safekeeper_recovery.transport._peer_exchange")
    a, b = await two_nodes(nursery, tmp_path)
    good = Counting(httpx.ASGITransport(app=b.app), 5)
    dead = Counting(failing_transport(), 6)
    exchange = await start_exchange(
        nursery, a, {NodeId(2): "http://b", NodeId(3): "http://dead"},
        {"http://b": good, "http://dead": dead}, interval=0.01,
    )
    with trio.fail_after(5):
        await good.reached.wait()
        await dead.reached.wait()
    stats = exchange.statistics()
    assert stats[NodeId(3)].failed >= 5
    assert stats[NodeId(2)].failed == 0
    assert "ConnectError" in (stats[NodeId(3)].last_error or "")
    warnings = [r for r in caplog.records if "sk 3" in r.getMessage()]
    assert len(warnings) == 1
    assert "at most once per 60s" in warnings[0].getMessage()


async def test_a_hanging_peer_does_not_delay_the_others(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    a, b = await two_nodes(nursery, tmp_path)
    good = Counting(httpx.ASGITransport(app=b.app), 11)
    exchange = await start_exchange(
        nursery, a, {NodeId(2): "http://b", NodeId(3): "http://hang"},
        {"http://b": good, "http://hang": httpx.MockTransport(hang)}, interval=0.01,
    )
    with trio.fail_after(5):
        await good.reached.wait()
    assert exchange.statistics()[NodeId(2)].sent >= 10
    assert exchange.statistics()[NodeId(3)].sent == 0


@attrs.define
class FlakyExchange:
    fail_first: int
    calls: int = 0
    published: list[PeerInfoBatch] = attrs.Factory(list)
    two_published: trio.Event = attrs.Factory(trio.Event)

    def on_resync(self, callback: Callable[[], None]) -> None:
        pass

    async def publish(self, batch: PeerInfoBatch) -> None:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise RuntimeError("broker down")
        self.published.append(batch)
        if len(self.published) >= 2:
            self.two_published.set()


async def test_publish_errors_are_survived(nursery: trio.Nursery, tmp_path: Path) -> None:
    a, _ = await two_nodes(nursery, tmp_path)
    flaky = FlakyExchange(fail_first=3)
    await nursery.start(functools.partial(
        serve_peer_exchange, a.registry, flaky, NodeId(1), "http://a", "ws://a", interval=0.01
    ))
    with trio.fail_after(5):
        await flaky.two_published.wait()
    batch = flaky.published[0]
    assert batch.node_id == 1
    assert [t.ttid for t in batch.timelines] == [a.timeline.ttid]


# ---- change-driven pushes, heartbeats, resync (over in-process HTTP) ----------------------


def entries(body: dict[str, object]) -> list[dict[str, object]]:
    listed = body["timelines"]
    assert isinstance(listed, list)
    return listed


class Recording(httpx.AsyncBaseTransport):
    """Wraps a transport and keeps every peer-info body it carried (and the answers)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.bodies: list[dict[str, object]] = []
        self.answers: list[dict[str, object]] = []
        self.changed = trio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(await request.aread()))
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self.answers.append(response.json())
        self.changed.set()
        self.changed = trio.Event()
        return response

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self.changed.wait()


async def test_changes_go_out_as_deltas_and_quiet_means_empty_heartbeats(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    a, b = await two_nodes(nursery, tmp_path)
    async with asgi_client(a.app) as c:  # a second timeline, so a delta names one of two
        other = {**CREATE_BODY, "timeline_id": "ab" * 16}
        assert (await c.post(f"/v1/tenant/{TENANT}/timeline", json=other)).status_code == 201
    wire = Recording(httpx.ASGITransport(app=b.app))
    await start_exchange(nursery, a, {NodeId(2): "http://b"}, {"http://b": wire})
    with trio.fail_after(5):
        await wire.wait_for(lambda: len(wire.bodies) >= 3)
    first, *rest = wire.bodies
    assert first["full"] is True
    assert len(entries(first)) == 2
    assert all(entries(body) == [] and body["full"] is False for body in rest)
    assert [body["seq"] for body in wire.bodies] == [1, 2, 3]
    assert {body["session"] for body in wire.bodies} == {first["session"]}
    assert all(answer["resync"] is False for answer in wire.answers)

    end = await write_wal(a.timeline, 1, wal(1000))

    def delivered() -> bool:
        """An answered body (B has applied it) carries the written flush position."""
        answered = wire.bodies[3:len(wire.answers)]
        return any(entry["flush_lsn"] == str(end) for body in answered for entry in entries(body))

    with trio.fail_after(5):
        await wire.wait_for(delivered)
    # write_wal is three changes (vote, election, append), each awaiting the disk: when they
    # span more than min_interval they go out as more than one delta (the term news at
    # once), so the count of deltas is timing; what each carries is not.
    deltas = [body for body in wire.bodies[3:] if entries(body)]
    assert all(delta["full"] is False for delta in deltas)
    assert [len(entries(delta)) for delta in deltas] == [1] * len(deltas)
    written = str(a.timeline.ttid.timeline_id)
    assert {entry["timeline_id"] for delta in deltas for entry in entries(delta)} == {written}
    assert entries(deltas[-1])[0]["flush_lsn"] == str(end)
    assert b.timeline.peers[NodeId(1)].flush_lsn == end


async def test_a_receiver_that_missed_batches_gets_a_full_one(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    a, b = await two_nodes(nursery, tmp_path)
    wire = Recording(httpx.ASGITransport(app=b.app))
    await start_exchange(nursery, a, {NodeId(2): "http://b"}, {"http://b": wire})
    with trio.fail_after(5):
        await wire.wait_for(lambda: len(wire.bodies) >= 2)
    b.registry.hub.sessions.clear()  # as if B restarted: it cannot vouch for what it holds
    seen = len(wire.bodies)
    with trio.fail_after(5):
        await wire.wait_for(lambda: any(body["full"] for body in wire.bodies[seen:]))
    after = wire.bodies[seen:]
    asked = next(i for i, answer in enumerate(wire.answers[seen:]) if answer["resync"])
    assert after[asked]["full"] is False, "a delta out of sequence is answered with resync"
    full_at = seen + next(i for i, body in enumerate(after) if body["full"])
    assert len(entries(wire.bodies[full_at])) == 1
    with trio.fail_after(5):
        await wire.wait_for(lambda: len(wire.answers) > full_at + 1)
    assert wire.answers[full_at + 1]["resync"] is False, "in sequence again after the full"


async def test_a_restarted_peer_gets_a_full_batch_without_waiting_for_a_heartbeat(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    a, b = await two_nodes(nursery, tmp_path)
    to_a = Recording(httpx.ASGITransport(app=a.app))
    # Heartbeats a minute apart: within the deadlines below, only the restart can make B
    # send A anything.
    await start_exchange(nursery, b, {NodeId(1): "http://a"}, {"http://a": to_a},
                         interval=60.0)
    with trio.CancelScope() as first_life:
        async with trio.open_nursery() as life:
            to_b = Recording(httpx.ASGITransport(app=b.app))
            await start_exchange(life, a, {NodeId(2): "http://b"}, {"http://b": to_b},
                                 interval=60.0)
            with trio.fail_after(5):
                await to_b.wait_for(lambda: len(to_b.answers) >= 1)
            assert NodeId(1) in b.timeline.peers
            first_life.cancel()
    # A restarts: a new exchange session, and nothing left of what B had told it.
    a.timeline.forget_peer(NodeId(2))
    a.registry.hub.sessions.clear()
    seen = len(to_a.bodies)
    await start_exchange(nursery, a, {NodeId(2): "http://b"},
                         {"http://b": httpx.ASGITransport(app=b.app)}, interval=60.0)
    with trio.fail_after(5):
        # On the answer, not the body: the body is recorded before A has answered it.
        await to_a.wait_for(lambda: len(to_a.answers) > seen)
    [full] = to_a.bodies[seen:]
    assert full["full"] is True
    assert len(entries(full)) == 1
    assert to_a.answers[seen]["resync"] is False, "A accepts it as the start of B's sequence"
    assert NodeId(2) in a.timeline.peers


# ---- the receiving side, step by step (explicit clock) -------------------------------------

OTHER = TenantTimelineId(TENANT, TimelineId(bytes(16)))


async def receiver(nursery: trio.Nursery) -> TimelineRegistry:
    registry = TimelineRegistry(NodeId(2), MemoryBackend())
    await nursery.start(registry.serve)
    for ttid in (TenantTimelineId(TENANT, TimelineId(bytes(range(16, 32)))), OTHER):
        await registry.create(ttid, TimelineParams(START, SEG))
    return registry


def batch(*ttids: TenantTimelineId, seq: int, full: bool = False, flush: int = 0,
          removed: tuple[TenantTimelineId, ...] = ()) -> PeerInfoBatch:
    lsn = Lsn(int(START) + flush)
    return PeerInfoBatch(
        NodeId(1), "http://a", "ws://a",
        tuple(PeerTimelineInfo(t, 1, 1, lsn, lsn) for t in ttids),
        full=full, removed=removed, session="s1", seq=seq,
    )


async def test_in_sequence_batches_keep_all_entries_alive_and_a_gap_does_not(
    nursery: trio.Nursery,
) -> None:
    registry = await receiver(nursery)
    mine, other = (registry.get(t) for t in registry.timelines)
    answer = await apply_peer_info_batch(registry, batch(mine.ttid, other.ttid, seq=1, full=True),
                                         now=100.0)
    assert answer == {"applied": 2, "ignored": 0, "resync": False}
    # Heartbeats (empty deltas, in sequence) keep every entry current: nothing is resent.
    assert await apply_peer_info_batch(registry, batch(seq=2), now=104.0) == {
        "applied": 0, "ignored": 0, "resync": False}
    assert [p.received_at for p in other.current_peers()] == [104.0]
    assert other.peers[NodeId(1)].received_at == 100.0
    assert [p.node_id for p in other.alive_peers(108.0, 5.0)] == [NodeId(1)]
    # A gap (seq 4 after 2): nothing is vouched for, the sender must send everything.
    answer = await apply_peer_info_batch(registry, batch(mine.ttid, seq=4, flush=10), now=105.0)
    assert answer == {"applied": 1, "ignored": 0, "resync": True}
    assert mine.peers[NodeId(1)].flush_lsn == START + 10, "the entries themselves are fresh"
    assert await apply_peer_info_batch(registry, batch(seq=5), now=107.0) == {
        "applied": 0, "ignored": 0, "resync": True}
    assert other.alive_peers(109.5, 5.0) == [], "stale: last confirmed at 104"
    assert [p.node_id for p in mine.alive_peers(109.5, 5.0)] == [NodeId(1)]
    # The full batch resynchronises; timelines it does not list lose the sender's entry.
    answer = await apply_peer_info_batch(registry, batch(mine.ttid, seq=6, full=True),
                                         now=110.0)
    assert answer["resync"] is False
    assert NodeId(1) not in other.peers
    assert await apply_peer_info_batch(registry, batch(seq=7), now=111.0) == {
        "applied": 0, "ignored": 0, "resync": False}


async def test_removed_timelines_lose_the_senders_entry(nursery: trio.Nursery) -> None:
    registry = await receiver(nursery)
    mine, other = (registry.get(t) for t in registry.timelines)
    await apply_peer_info_batch(registry, batch(mine.ttid, other.ttid, seq=1, full=True), 1.0)
    await apply_peer_info_batch(registry, batch(seq=2, removed=(other.ttid,)), 2.0)
    assert NodeId(1) in mine.peers
    assert NodeId(1) not in other.peers


async def test_a_peer_back_after_silence_wakes_only_timelines_it_could_donate_to(
    nursery: trio.Nursery,
) -> None:
    registry = await receiver(nursery)
    mine, other = (registry.get(t) for t in registry.timelines)
    ahead = batch(mine.ttid, seq=1, full=True, flush=100)
    level = PeerTimelineInfo(other.ttid, 0, 0, START, START)
    await apply_peer_info_batch(
        registry, attrs.evolve(ahead, timelines=(*ahead.timelines, level)), 1.0)
    versions = (mine.changed.version, other.changed.version)
    # In sequence within the heartbeat timeout: nobody could have seen the peer dead.
    await apply_peer_info_batch(registry, batch(seq=2), 1.0 + registry.hub.silence_wake)
    assert (mine.changed.version, other.changed.version) == versions
    # After a longer silence the peer was dead to donor selection: re-check where it leads.
    await apply_peer_info_batch(registry, batch(seq=3), 2.0 + 2 * registry.hub.silence_wake)
    assert mine.changed.version > versions[0]
    assert other.changed.version == versions[1], "not ahead there: nothing to re-check"


async def test_a_busy_peer_gets_the_accumulated_changes_in_one_batch(
    nursery: trio.Nursery,
) -> None:
    release = trio.Event()
    bodies: list[dict[str, object]] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(await request.aread()))
        if len(bodies) == 1:
            await release.wait()
        return httpx.Response(200, json={"applied": 0, "ignored": 0, "resync": False})

    exchange = HttpPeerExchange({NodeId(2): "http://b"}, client_factory=in_process(
        {"http://b": httpx.MockTransport(slow)}))
    await nursery.start(exchange.serve)
    x, y, z = (TenantTimelineId(TENANT, TimelineId(bytes([i]) * 16)) for i in (1, 2, 3))

    def info(ttid: TenantTimelineId, flush: int) -> PeerTimelineInfo:
        return PeerTimelineInfo(ttid, 1, 1, Lsn(int(START) + flush), START)

    base = PeerInfoBatch(NodeId(1), "http://a", "ws://a")
    await exchange.publish(attrs.evolve(base, timelines=(info(x, 0), info(y, 0))))
    with trio.fail_after(5):
        while not bodies:  # noqa: ASYNC110  (the transport has no event of its own)
            await trio.sleep(0.01)
    # While the full batch is in flight: x moves twice, y is deleted, z appears.
    delta = attrs.evolve(base, full=False)
    await exchange.publish(attrs.evolve(delta, timelines=(info(x, 10),)))
    await exchange.publish(attrs.evolve(delta, timelines=(info(x, 20), info(z, 5)),
                                        removed=(y,)))
    release.set()
    with trio.fail_after(5):
        while len(bodies) < 2:  # noqa: ASYNC110
            await trio.sleep(0.01)
    merged = bodies[1]
    assert merged["full"] is False
    assert merged["seq"] == 2
    assert {e["timeline_id"]: e["flush_lsn"] for e in entries(merged)} == {
        str(x.timeline_id): str(Lsn(int(START) + 20)),
        str(z.timeline_id): str(Lsn(int(START) + 5)),
    }
    assert merged["removed"] == [{"tenant_id": str(TENANT), "timeline_id": str(y.timeline_id)}]
    assert exchange.statistics()[NodeId(2)].sent == 2


async def test_a_steady_stream_of_changes_is_coalesced_more_after_the_first_few(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # A leader streaming WAL changes the node's flush position on every fsync. The first
    # BUSY_AFTER change batches go out at the quick pace, then one per busy interval; a
    # new term is news: it goes out at once and starts the count again.
    busy_interval = 2.0  # long, so that "at once" cannot be confused with it under load
    a, b = await two_nodes(nursery, tmp_path)
    wire = Recording(httpx.ASGITransport(app=b.app))
    sent_at: list[float] = []
    original = wire.handle_async_request

    async def stamped(request: httpx.Request) -> httpx.Response:
        sent_at.append(trio.current_time())
        return await original(request)

    wire.handle_async_request = stamped  # type: ignore[method-assign]
    exchange = HttpPeerExchange({NodeId(2): "http://b"},
                                client_factory=in_process({"http://b": wire}))
    await nursery.start(exchange.serve)
    await nursery.start(functools.partial(  # heartbeats only after 30 s: all carry changes
        serve_peer_exchange, a.registry, exchange, a.ctx.node_id, a.ctx.http_addr,
        a.ctx.wal_addr, interval=30.0, busy_interval=busy_interval,
    ))

    async def lead(term: int, elected: trio.Event) -> None:
        end = await write_wal(a.timeline, term, wal(100))
        elected.set()
        while True:
            await trio.sleep(0.01)
            await a.timeline.process(AppendRequest(term, end, Lsn(0), Lsn(0), wal(100)))
            end += 100

    async def quick_then_held_back(first: int) -> None:
        want = first + BUSY_AFTER + 1
        with trio.fail_after(30):
            await wire.wait_for(lambda: len(wire.bodies) >= want)
        assert all(entries(body) for body in wire.bodies[first:want])
        # Each batch is built before it is sent: allow the send delays to differ by 0.1 s.
        held_back = sent_at[want - 1] - sent_at[want - 2]
        assert held_back >= busy_interval - 0.1, sent_at

    async with trio.open_nursery() as leaders:
        leaders.start_soon(lead, 1, trio.Event())
        await quick_then_held_back(1)  # after the first, full, batch
        leaders.cancel_scope.cancel()
    elected = trio.Event()
    nursery.start_soon(lead, 2, elected)
    await elected.wait()
    changed_at = trio.current_time()
    with trio.fail_after(30):
        await wire.wait_for(lambda: any(
            entry["term"] == 2 for body in wire.bodies for entry in entries(body)))
    news = next(i for i, body in enumerate(wire.bodies)
                if any(entry["term"] == 2 for entry in entries(body)))
    assert sent_at[news] - changed_at < busy_interval / 2, (changed_at, sent_at)
    await quick_then_held_back(news + 1)


def test_the_hub_reports_a_peer_restart_once_per_new_session() -> None:
    hub = PeerHub()
    restarted: list[NodeId] = []
    unsubscribe = hub.subscribe_restarts(restarted.append)
    assert hub.session_seen(NodeId(1), "s1") is False, "first contact: maybe we started too"
    assert hub.session_seen(NodeId(1), "s1") is False
    assert hub.session_seen(NodeId(3), "t1") is False
    assert hub.session_seen(NodeId(1), "s2") is True
    assert hub.session_seen(NodeId(1), "s2") is False, "told once, whatever it sends next"
    assert restarted == [NodeId(1)]
    unsubscribe()
    assert hub.session_seen(NodeId(3), "t2") is True
    assert restarted == [NodeId(1)]
