"""u64 boundaries on every field of every message and endpoint of one real node (issue 20).

Each case sends one field at a boundary (0, 1, 2^63, 2^64-2, 2^64-1 on the wire; also -1
and 2^64 in JSON, and the extreme ``X/Y`` LSN texts) to a fresh *victim* timeline. It must
get an answer or a documented refusal (never a 5xx or close code 1011), the victim must not
be broken and must still elect a proposer and take its WAL, and another timeline of the
node must still accept WAL from a proposer. After each batch the node restarts and every
timeline must load and take WAL again.

The cases are batched per port (one node, one restart per batch) to keep this fast.
"""

from __future__ import annotations

import functools
import itertools
import json
import struct
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Final

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from safekeeper_recovery.core import (
    AcceptorGreeting,
    AppendRequest,
    Greeting,
    Lsn,
    ProposerElected,
    TenantTimelineId,
    TermHistory,
    TimelineId,
    VoteRequest,
    crc32c,
    decode_acceptor_message,
    encode,
)
from safekeeper_recovery.proposer import ProposerConfig, propose, websocket_connector
from safekeeper_recovery.transport._wal_client import WalConnectError, _open

from ._node_thread import CONTROL_TTID, SEG, START, TENANT, NodeThread

U64: Final = 2**64 - 1
WIRE: Final = (0, 1, 2**63, U64 - 1, U64)
"""Boundaries of a u64 field of the binary protocol."""
U32: Final = (0, 1, 2**31, 2**32 - 1)
JSON_INTS: Final = (*WIRE, -1, 2**64)
"""JSON numbers have no width: one past each end, too."""
LSN_TEXTS: Final = ("0/0", "FFFFFFFF/FFFFFFFE", "FFFFFFFF/FFFFFFFF", "100000000/0")
REFUSALS: Final = {1002, 1009, 4000, 4009}
"""Close codes of a clear refusal (docs/architecture.md "Wire"); 1011 is an internal error."""
DEADLINE: Final = 15.0
_victims = itertools.count(1)

Case = Callable[[NodeThread, TenantTimelineId], Awaitable[None]]


# ---- the checks around every case ----------------------------------------------------------


async def new_victim(node: NodeThread) -> TenantTimelineId:
    ttid = TenantTimelineId(TENANT, TimelineId((0xB0 << 120 | next(_victims)).to_bytes(16)))
    body = {"timeline_id": str(ttid.timeline_id), "start_lsn": str(START), "wal_seg_size": SEG}
    async with node.http(DEADLINE) as http:
        r = await http.post(f"/v1/tenant/{TENANT}/timeline", json=body)
    assert r.status_code == 201, r.text
    return ttid


def path(ttid: TenantTimelineId) -> str:
    return f"/v1/tenant/{ttid.tenant_id}/timeline/{ttid.timeline_id}"


async def assert_loaded(node: NodeThread, ttid: TenantTimelineId) -> None:
    async with node.http(DEADLINE) as http:
        r = await http.get(path(ttid))
    assert r.status_code == 200, (ttid, r.text)
    assert r.json()["broken"] is None, r.text


async def write_wal(node: NodeThread, ttid: TenantTimelineId) -> None:
    """The product's proposer, alone on ``ttid``: elected, 8 KiB committed."""
    config = ProposerConfig(safekeepers=(node.wal_url,), tenant_id=ttid.tenant_id,
                            timeline_id=ttid.timeline_id, total_bytes=8192)
    result = await propose(config, websocket_connector(ttid.tenant_id, ttid.timeline_id))
    assert result.commit_lsn == result.end_lsn, result


async def run_batch(node: NodeThread, cases: list[tuple[str, Case]]) -> None:
    victims = []
    for name, case in cases:
        victim = await new_victim(node)
        with trio.fail_after(DEADLINE):
            try:
                await case(node, victim)
                await assert_loaded(node, victim)
                await write_wal(node, victim)  # not bricked: a proposer is still elected
                await write_wal(node, CONTROL_TTID)  # another timeline still takes WAL
            except BaseException as e:
                e.add_note(f"case: {name}")
                raise
        victims.append(victim)
    await trio.to_thread.run_sync(node.restart)  # it blocks: the node runs in a thread
    for ttid in [CONTROL_TTID, *victims]:
        await assert_loaded(node, ttid)
    await write_wal(node, CONTROL_TTID)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeThread]:
    """A node of its own (a restart must not disturb the other fuzz modules' node)."""
    running = NodeThread(tmp_path / "node")
    running.start()
    try:
        yield running
    finally:
        running.stop()


# ---- WAL port -------------------------------------------------------------------------------


def raw_append(term: int, begin: int, end: int, commit: int, truncate: int, data: bytes) -> bytes:
    """An AppendRequest frame with every field as given (``end`` need not match)."""
    return b"a" + struct.pack(">QQQQQI", term, begin, end, commit, truncate, crc32c(data)) + data


def greeting(ttid: TenantTimelineId, **fields: int) -> bytes:
    return encode(Greeting(ttid.tenant_id, ttid.timeline_id, **fields))


def elected(term: int) -> list[bytes]:
    return [encode(VoteRequest(term)),
            encode(ProposerElected(term, START, TermHistory.of((0, START), (term, START))))]


async def push_frames(node: NodeThread, ttid: TenantTimelineId, frames: list[bytes]) -> None:
    """Greet, send ``frames``, greet again as a probe; the connection must answer the probe
    or end with a clear refusal."""
    url = f"{node.wal_url}{path(ttid)}/wal_push"
    async with _open(url, None, DEADLINE) as ws:
        code = await _exchange(ws, [greeting(ttid), *frames, greeting(ttid)], greetings=2)
    assert code is None or code in REFUSALS, f"closed with {code}: {ws.closed}"


async def _exchange(ws: WebSocketConnection, frames: list[bytes], *, greetings: int) -> int | None:
    try:
        for frame in frames:
            await ws.send_message(frame)
        seen = 0
        while seen < greetings:
            raw = await ws.get_message()
            assert isinstance(raw, bytes)
            seen += isinstance(decode_acceptor_message(raw), AcceptorGreeting)
    except ConnectionClosed as e:
        return e.reason.code if e.reason is not None else None
    return None


async def wait_for_feedback(node: NodeThread, ttid: TenantTimelineId) -> None:
    async with node.http(DEADLINE) as http:
        while True:
            senders = (await http.get(path(ttid))).json()["walsenders"]
            if senders and senders[0]["feedback"] is not None:
                return
            await trio.sleep(0.01)


def wal_cases() -> list[tuple[str, Case]]:
    cases: list[tuple[str, Case]] = []

    def add(name: str, frames: list[bytes], **greeting_fields: int) -> None:
        async def case(node: NodeThread, ttid: TenantTimelineId) -> None:
            first = [greeting(ttid, **greeting_fields)] if greeting_fields else []
            await push_frames(node, ttid, first + frames)

        cases.append((name, case))

    for v in U32:
        add(f"Greeting.pg_version={v}", [], pg_version=v)
        add(f"Greeting.wal_seg_size={v}", [], wal_seg_size=v)
    vote1 = encode(VoteRequest(1))
    for v in WIRE:
        add(f"Greeting.system_id={v}", [], system_id=v)
        add(f"VoteRequest.term={v}", [encode(VoteRequest(v))])
        add(f"ProposerElected.term={v}", [
            b"e" + struct.pack(">QQI", v, START, 2) + struct.pack(">QQQQ", 0, START, v, START)])
        add(f"ProposerElected.start={v}", [
            vote1, b"e" + struct.pack(">QQI", 1, v, 2) + struct.pack(">QQQQ", 0, START, 1, START)])
        add(f"ProposerElected.history.lsn={v}", [
            vote1, b"e" + struct.pack(">QQI", 1, v, 2) + struct.pack(">QQQQ", 0, START, 1, v)])
        add(f"AppendRequest.term={v}", [*elected(1), raw_append(v, START, START + 1, 0, 0, b"x")])
        add(f"AppendRequest.begin={v}", [*elected(1), raw_append(1, v, v, 0, 0, b"")])
        add(f"AppendRequest.end={v}", [*elected(1), raw_append(1, START, v, 0, 0, b"x")])
        add(f"AppendRequest.commit={v}", [
            *elected(1), encode(AppendRequest(1, START, Lsn(v), Lsn(0), b"x"))])
        add(f"AppendRequest.truncate={v}", [
            *elected(1), encode(AppendRequest(1, START, Lsn(0), Lsn(v), b"x"))])
    statuses = [(f"StatusUpdate field {f}={v}", f, v, 0) for f in range(3) for v in WIRE]
    statuses += [(f"StatusUpdate.timestamp={ts}", 0, int(START), ts) for ts in (-(2**63),
                                                                             2**63 - 1)]
    for name, field, v, ts in statuses:
        async def status_case(node: NodeThread, ttid: TenantTimelineId, field: int = field,
                              v: int = v, ts: int = ts) -> None:
            lsns = [int(START)] * 3
            lsns[field] = v
            url = f"{node.wal_url}{path(ttid)}/wal_stream?start_lsn={START}"
            async with _open(url, None, DEADLINE) as ws:
                await ws.send_message(b"r" + struct.pack(">QQQqB", *lsns, ts, 1))
                await wait_for_feedback(node, ttid)  # taken in, the stream goes on
                assert ws.closed is None

        cases.append((name, status_case))
    for query in [f"start_lsn={lsn}" for lsn in LSN_TEXTS] + [
        f"start_lsn={START}&term={t}" for t in (*WIRE, 2**64)
    ]:
        async def query_case(node: NodeThread, ttid: TenantTimelineId, query: str = query
                             ) -> None:
            url = f"{node.wal_url}{path(ttid)}/wal_stream?{query}"
            try:
                async with _open(url, None, DEADLINE):
                    pass  # accepted: it waits for WAL that may never come
            except WalConnectError as e:  # a refused handshake: a 4xx with a JSON error
                refused = e
            else:
                return
            assert refused.status is not None, refused
            assert 400 <= refused.status < 500, refused
            assert "error" in json.loads(refused.body or "{}"), refused

        cases.append((f"wal_stream?{query}", query_case))
    return cases


@pytest.mark.slow
async def test_every_wal_message_field_at_its_u64_boundaries(node: NodeThread) -> None:
    await run_batch(node, wal_cases())


# ---- HTTP port ------------------------------------------------------------------------------


def http_case(method: str, target: str, body: object = None,
              body_for: Callable[[TenantTimelineId], object] | None = None) -> Case:
    """A request to ``target`` (``{path}``: the victim's path) with a JSON body (``body``,
    or ``body_for(victim)``); the answer must be below 500, a 4xx a JSON error."""
    async def case(node: NodeThread, ttid: TenantTimelineId) -> None:
        value = body_for(ttid) if body_for is not None else body
        content = None if value is None else json.dumps(value).encode()
        async with node.http(DEADLINE) as http:
            r = await http.request(method, target.format(path=path(ttid)), content=content)
        assert r.status_code < 500, (r.status_code, r.text)
        if r.status_code >= 400:
            assert "error" in r.json(), r.text

    return case


def peer_batch(fields: dict[str, object], ttid: TenantTimelineId) -> dict[str, object]:
    """A batch with one entry, for ``ttid``, with ``fields`` replaced."""
    entry = {"tenant_id": str(ttid.tenant_id), "timeline_id": str(ttid.timeline_id),
             "term": 1, "last_log_term": 0, "flush_lsn": str(START), "commit_lsn": str(START)}
    batch = {"node_id": 9, "http_addr": "http://127.0.0.1:1", "wal_addr": "ws://127.0.0.1:1",
             "timelines": [entry]}
    for key, value in fields.items():
        (batch if key in ("node_id", "seq") else entry)[key] = value
    if "seq" in fields:
        batch["session"] = "s1"
    return batch


def http_cases() -> list[tuple[str, Case]]:
    cases: list[tuple[str, Case]] = []
    create = f"/v1/tenant/{TENANT}/timeline"

    def new_timeline(**fields: object) -> dict[str, object]:
        return {"timeline_id": f"c{next(_victims):031x}", "start_lsn": str(START),
                "wal_seg_size": SEG, **fields}

    for v in JSON_INTS:
        cases.append((f"term_bump term={v}", http_case("POST", "{path}/term_bump", {"term": v})))
        for field in ("wal_seg_size", "pg_version", "system_id"):
            cases.append((f"create {field}={v}",
                          http_case("POST", create, new_timeline(**{field: v}))))
        for field in ("node_id", "seq", "term", "last_log_term"):
            cases.append((f"peer_info {field}={v}", http_case(
                "POST", "/v1/peer_info", body_for=functools.partial(peer_batch, {field: v}))))
        cases.append((f"changes after={v}",
                      http_case("GET", f"/v1/timelines/changes?after={v}")))
    for lsn in LSN_TEXTS:
        cases.append((f"create start_lsn={lsn}",
                      http_case("POST", create, new_timeline(start_lsn=lsn))))
        cases.append((f"digest from_lsn={lsn}",
                      http_case("GET", f"{{path}}/digest?from_lsn={lsn}&until_lsn={START}")))
        cases.append((f"digest until_lsn={lsn}",
                      http_case("GET", f"{{path}}/digest?from_lsn={START}&until_lsn={lsn}")))
        for field in ("flush_lsn", "commit_lsn", "backup_lsn", "peer_horizon_lsn",
                      "remote_consistent_lsn", "local_start_lsn"):
            cases.append((f"peer_info {field}={lsn}", http_case(
                "POST", "/v1/peer_info", body_for=functools.partial(peer_batch, {field: lsn}))))
    return cases


@pytest.mark.slow
async def test_every_http_field_at_its_u64_boundaries(node: NodeThread) -> None:
    await run_batch(node, http_cases())
