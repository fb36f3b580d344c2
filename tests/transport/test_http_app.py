"""The HTTP API in-process (httpx ASGITransport) over a real registry in tmp_path."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from safekeeper_recovery.core import Lsn, NodeId, TenantTimelineId, TermHistory
from safekeeper_recovery.recovery import RecoveryStatus
from safekeeper_recovery.transport import (
    PeerInfoBatch,
    RecoveryReport,
    WalSenderFeedback,
    WalSenderInfo,
    _http_app,
    decode_peer_info_batch,
    encode_peer_info_batch,
    parse_timeline_status,
)

from ._http_support import (
    CREATE_BODY,
    SEG,
    START,
    TENANT,
    TIMELINE,
    TL_PATH,
    TTID,
    HttpNode,
    start_http_node,
    wal,
    write_wal,
)


@pytest.fixture
async def http_node(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[HttpNode]:
    node = await start_http_node(nursery, tmp_path)
    async with node.client:
        yield node


@pytest.fixture
async def with_timeline(http_node: HttpNode) -> HttpNode:
    r = await http_node.client.post(f"/v1/tenant/{TENANT}/timeline", json=CREATE_BODY)
    assert r.status_code == 201, r.text
    return http_node


async def assert_serving(node: HttpNode) -> None:
    r = await node.client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


# ---- node-wide ---------------------------------------------------------------------------


async def test_healthz_and_metrics_answer(with_timeline: HttpNode) -> None:
    await assert_serving(with_timeline)
    r = await with_timeline.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "safekeeper_timelines 1.0" in r.text
    assert "safekeeper_broken_timelines 0.0" in r.text
    assert 'safekeeper_recovery_attempts_total{outcome="donor_error"} 0.0' in r.text


async def test_status_reports_node_and_counts(with_timeline: HttpNode) -> None:
    with_timeline.registry.broken[TenantTimelineId(TENANT, TIMELINE.__class__(b"\x01" * 16))] = (
        "failed to load: bad checksum"
    )
    r = await with_timeline.client.get("/v1/status")
    assert r.status_code == 200
    body = r.json()
    assert body["node_id"] == 1
    assert body["version"]
    assert body["http_addr"] == "http://127.0.0.1:7001"
    assert body["wal_addr"] == "ws://127.0.0.1:5001"
    assert body["timeline_count"] == 2
    assert body["broken_count"] == 1
    assert body["broken_timelines"][0]["broken"] == "failed to load: bad checksum"


async def test_timelines_listing_shows_ok_and_broken(with_timeline: HttpNode) -> None:
    other = TenantTimelineId(TENANT, TIMELINE.__class__(b"\x02" * 16))
    with_timeline.registry.broken[other] = "failed to load: gone"
    r = await with_timeline.client.get("/v1/timelines")
    assert r.status_code == 200
    states = {(t["timeline_id"], t["state"], t["broken"]) for t in r.json()["timelines"]}
    assert states == {(str(TIMELINE), "ok", None), (str(other.timeline_id), "broken",
                                                     "failed to load: gone")}


async def test_change_feed_long_poll_answers_on_the_next_change(with_timeline: HttpNode) -> None:
    r = await with_timeline.client.get("/v1/timelines/changes")
    assert r.status_code == 200
    first = r.json()
    assert first["reset"] is True  # no cursor yet: re-read everything
    cursor = {"session": first["session"], "after": str(first["cursor"])}
    answers: list[httpx.Response] = []

    async def long_poll() -> None:
        answers.append(await with_timeline.client.get(
            "/v1/timelines/changes", params={**cursor, "timeout": "60"}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(long_poll)
        await trio.testing.wait_all_tasks_blocked()
        assert with_timeline.registry.feed.statistics()["waiters"] == 1
        assert not answers  # nothing changed: it waits
        await write_wal(with_timeline.timeline, 1, b"x" * 10)
    body = answers[0].json()
    assert answers[0].status_code == 200
    assert body["reset"] is False
    assert body["changed"] == [{"tenant_id": str(TENANT), "timeline_id": str(TIMELINE)}]
    assert body["deleted"] == []
    assert body["cursor"] > first["cursor"]

    r = await with_timeline.client.delete(TL_PATH)
    assert r.status_code == 200
    r = await with_timeline.client.get("/v1/timelines/changes", params={
        "session": body["session"], "after": str(body["cursor"])})
    assert r.json()["deleted"] == [{"tenant_id": str(TENANT), "timeline_id": str(TIMELINE)}]


@pytest.mark.parametrize("query", [
    {"after": "x"}, {"after": "-1"}, {"timeout": "301"}, {"timeout": "nan"},
    {"timeout": "-1"}, {"timeout": "inf"}, {"after": "1" * 5000},
])
async def test_change_feed_rejects_bad_parameters(with_timeline: HttpNode,
                                                  query: dict[str, str]) -> None:
    r = await with_timeline.client.get("/v1/timelines/changes", params=query)
    assert r.status_code == 400, r.text
    assert "error" in r.json()


# ---- create / status / delete ---------------------------------------------------------------


async def test_create_is_idempotent_and_conflicts_on_other_params(http_node: HttpNode) -> None:
    url = f"/v1/tenant/{TENANT}/timeline"
    r = await http_node.client.post(url, json=CREATE_BODY)
    assert r.status_code == 201
    assert r.json()["timeline_start_lsn"] == str(START)
    r = await http_node.client.post(url, json=CREATE_BODY)
    assert r.status_code == 200
    r = await http_node.client.post(url, json={**CREATE_BODY, "wal_seg_size": 2 * SEG})
    assert r.status_code == 409
    assert "different parameters" in r.json()["error"]


async def test_timeline_status_has_reference_fields(with_timeline: HttpNode) -> None:
    end = await write_wal(with_timeline.timeline, 1, wal(10_000), commit=START + 4000)
    r = await with_timeline.client.get(TL_PATH)
    assert r.status_code == 200
    s = r.json()
    assert s["tenant_id"] == str(TENANT)
    assert s["timeline_id"] == str(TIMELINE)
    assert s["acceptor_state"] == {
        "term": 1,
        "epoch": 1,
        "term_history": [{"term": 0, "lsn": "0/1000000"}, {"term": 1, "lsn": "0/1000000"}],
    }
    assert s["last_log_term"] == 1
    assert s["pg_info"] == {"pg_version": 0, "system_id": 0, "wal_seg_size": SEG}
    assert s["wal_seg_size"] == SEG
    assert s["flush_lsn"] == str(end) == "0/1002710"
    assert s["commit_lsn"] == "0/1000FA0"
    assert s["timeline_start_lsn"] == s["local_start_lsn"] == "0/1000000"
    for key in ("backup_lsn", "peer_horizon_lsn", "remote_consistent_lsn"):
        Lsn.parse(s[key])
    assert s["peers"] == []
    assert s["walreceivers"] == []
    assert s["walsenders"] == []
    assert s["broken"] is None
    assert s["recovery"] == {"state": "disabled"}


async def test_timeline_status_parses_into_its_typed_model(with_timeline: HttpNode) -> None:
    end = await write_wal(with_timeline.timeline, 1, wal(10_000), commit=START + 4000)
    recovery = RecoveryStatus(state="backoff", attempts=2, last_error="boom")
    with_timeline.ctx.recovery_statuses = {TTID: recovery}
    doc = (await with_timeline.client.get(TL_PATH)).json()
    status = parse_timeline_status(doc)
    assert status.ttid == TTID
    assert (status.term, status.last_log_term) == (1, 1)
    assert status.term_history == TermHistory.of((0, START), (1, START))
    assert (status.flush_lsn, status.commit_lsn) == (end, START + 4000)
    assert status.timeline_start_lsn == status.local_start_lsn == START
    assert (status.wal_seg_size, status.connected_proposers, status.broken) == (SEG, 0, None)
    assert status.recovery == RecoveryReport(state="backoff", attempts=2, last_error="boom")
    assert status.wal_lifecycle is None
    assert status.raw == doc


async def test_timeline_status_includes_recovery_and_receivers(with_timeline: HttpNode) -> None:
    tl = with_timeline.timeline
    recovery = RecoveryStatus(state="idle")
    with_timeline.ctx.recovery_statuses = {tl.ttid: recovery}
    async with tl.receiver("proposer", "10.1.1.1:5000") as r:
        s = (await with_timeline.client.get(TL_PATH)).json()
        tl.mark(r, "voted", tl.acceptor.term)
        voted = (await with_timeline.client.get(TL_PATH)).json()
    assert s["recovery"] == recovery.to_json()
    assert (s["recovery"]["state"], s["recovery"]["donor"]) == ("idle", None)
    [receiver] = s["walreceivers"]
    assert receiver == {"id": r.id, "kind": "proposer", "status": "connected", "term": None,
                        "remote": "10.1.1.1:5000"}
    assert s["connected_proposers"] == 0  # connected but silent: not yet in the way
    [receiver] = voted["walreceivers"]
    assert (receiver["status"], receiver["term"]) == ("voted", tl.acceptor.term)
    assert voted["connected_proposers"] == 1


async def test_timeline_status_lists_the_wal_port_senders(with_timeline: HttpNode) -> None:
    info = WalSenderInfo(7, "10.1.1.2:6000", START, 1, sent_lsn=START + 10)
    with with_timeline.ctx.walsenders.listed(TTID, info):
        listed = (await with_timeline.client.get(TL_PATH)).json()["walsenders"]
        info.feedback = WalSenderFeedback(START + 10, START + 5, Lsn(0), 42)
        reported = (await with_timeline.client.get(TL_PATH)).json()["walsenders"]
    gone = (await with_timeline.client.get(TL_PATH)).json()["walsenders"]
    assert listed == [{"remote": "10.1.1.2:6000", "start_lsn": "0/1000000", "term": 1,
                       "sent_lsn": "0/100000A", "feedback": None}]
    assert reported[0]["feedback"] == {"write_lsn": "0/100000A", "flush_lsn": "0/1000005",
                                       "apply_lsn": "0/0", "timestamp_us": 42}
    assert gone == []


async def test_status_of_runtime_broken_timeline_is_200_with_reason(
    with_timeline: HttpNode,
) -> None:
    with_timeline.timeline.broken = "storage failure: disk on fire"
    r = await with_timeline.client.get(TL_PATH)
    assert r.status_code == 200
    assert r.json()["broken"] == "storage failure: disk on fire"
    assert (await with_timeline.client.get("/v1/status")).json()["broken_count"] == 1


async def test_status_of_timeline_that_failed_to_load_is_503(http_node: HttpNode) -> None:
    http_node.registry.broken[TTID] = "failed to load: checksum mismatch"
    r = await http_node.client.get(TL_PATH)
    assert r.status_code == 503
    body = r.json()
    assert body["broken"] == "failed to load: checksum mismatch"
    assert body["error"].startswith("timeline broken: ")


async def test_delete_then_404(with_timeline: HttpNode, tmp_path: Path) -> None:
    r = await with_timeline.client.delete(TL_PATH)
    assert r.status_code == 200
    assert r.json()["deleted"] is True
    assert not (tmp_path / str(TENANT) / str(TIMELINE)).exists()
    assert (await with_timeline.client.get(TL_PATH)).status_code == 404
    r = await with_timeline.client.delete(TL_PATH)
    assert r.status_code == 404
    assert "not found" in r.json()["error"]


async def test_unknown_timeline_is_404(http_node: HttpNode) -> None:
    for method, suffix in (("GET", ""), ("GET", "/digest?from_lsn=0/1&until_lsn=0/2"),
                           ("POST", "/term_bump")):
        r = await http_node.client.request(method, TL_PATH + suffix, json={"term": None})
        assert r.status_code == 404, (method, suffix, r.text)
        assert "error" in r.json()


# ---- digest and term bump -------------------------------------------------------------------


async def test_digest_of_written_wal(with_timeline: HttpNode) -> None:
    data = wal(50_000)
    end = await write_wal(with_timeline.timeline, 1, data)
    r = await with_timeline.client.get(
        f"{TL_PATH}/digest", params={"from_lsn": str(START + 100), "until_lsn": str(end)}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"sha256": hashlib.sha256(data[100:]).hexdigest()}


@pytest.mark.parametrize(
    ("from_lsn", "until_lsn", "needle"),
    [
        ("0/1000010", "0/1000000", "from_lsn"),   # from > until
        ("0/FFFFFF", "0/1000010", "outside"),     # before timeline start
        ("0/1000000", "0/2000000", "outside"),    # beyond flush_lsn
        ("zz/1", "0/1000000", "from_lsn"),
        ("0/1000000", "1/2/3", "until_lsn"),
        ("0/1000000", "123456789/0", "until_lsn"),
        ("", "0/1000000", "from_lsn"),
    ],
)
async def test_digest_rejects_bad_ranges(
    with_timeline: HttpNode, from_lsn: str, until_lsn: str, needle: str
) -> None:
    await write_wal(with_timeline.timeline, 1, wal(100))
    r = await with_timeline.client.get(
        f"{TL_PATH}/digest", params={"from_lsn": from_lsn, "until_lsn": until_lsn}
    )
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]
    await assert_serving(with_timeline)


async def test_digest_needs_both_parameters(with_timeline: HttpNode) -> None:
    r = await with_timeline.client.get(f"{TL_PATH}/digest", params={"from_lsn": str(START)})
    assert r.status_code == 400
    assert "until_lsn" in r.json()["error"]


async def test_term_bump(with_timeline: HttpNode) -> None:
    url = f"{TL_PATH}/term_bump"
    r = await with_timeline.client.post(url, json={"term": None})
    assert r.json() == {"previous_term": 0, "current_term": 1}
    r = await with_timeline.client.post(url, json={"term": 7})
    assert r.json() == {"previous_term": 1, "current_term": 7}
    r = await with_timeline.client.post(url, json={"term": 3})  # never lowers
    assert r.json() == {"previous_term": 7, "current_term": 7}
    r = await with_timeline.client.post(url)  # empty body: like null
    assert r.json() == {"previous_term": 7, "current_term": 8}
    assert with_timeline.timeline.acceptor.term == 8


@pytest.mark.parametrize("body", [{"term": "5"}, {"term": True}, {"term": -1},
                                  {"term": 2**64}, {"term": 1.5}, [1]])
async def test_term_bump_rejects_bad_terms(with_timeline: HttpNode, body: object) -> None:
    r = await with_timeline.client.post(f"{TL_PATH}/term_bump", json=body)
    assert r.status_code == 400, r.text
    assert with_timeline.timeline.acceptor.term == 0


@pytest.mark.parametrize("body", [{"term": 2**64 - 1}, {"term": 2**32 + 1}])
async def test_term_bump_that_would_use_up_the_term_space_is_refused_with_409(
    with_timeline: HttpNode, body: object
) -> None:
    r = await with_timeline.client.post(f"{TL_PATH}/term_bump", json=body)
    assert r.status_code == 409, r.text
    assert "R10" in r.json()["error"]
    assert with_timeline.timeline.acceptor.term == 0


# ---- peer info ------------------------------------------------------------------------------


def peer_batch(**overrides: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "tenant_id": str(TENANT), "timeline_id": str(TIMELINE), "term": 1,
        "last_log_term": 1, "flush_lsn": "0/1002710", "commit_lsn": "0/1002000",
        "backup_lsn": "0/0", "peer_horizon_lsn": "0/1000000",
        "remote_consistent_lsn": "0/0", "local_start_lsn": "0/1000000",
    }
    entry.update(overrides)
    return {"node_id": 2, "http_addr": "http://127.0.0.1:7002",
            "wal_addr": "ws://127.0.0.1:5002", "timelines": [entry]}


async def test_peer_info_is_recorded_with_receive_time(with_timeline: HttpNode) -> None:
    before = trio.current_time()
    r = await with_timeline.client.post("/v1/peer_info", json=peer_batch())
    assert r.json() == {"applied": 1, "ignored": 0}
    peer = with_timeline.timeline.peers[2]  # type: ignore[index]  # NodeId is an int
    assert before <= peer.received_at <= trio.current_time()
    assert peer.http_addr == "http://127.0.0.1:7002"
    [shown] = (await with_timeline.client.get(TL_PATH)).json()["peers"]
    assert shown["sk_id"] == 2
    assert shown["flush_lsn"] == "0/1002710"
    assert shown["wal_addr"] == "ws://127.0.0.1:5002"


async def test_commit_lsn_follows_peer_only_with_equal_last_log_term(
    with_timeline: HttpNode,
) -> None:
    tl = with_timeline.timeline
    await write_wal(tl, 1, wal(10_000))
    assert tl.acceptor.commit_lsn < START + 8000
    r = await with_timeline.client.post(
        "/v1/peer_info", json=peer_batch(last_log_term=2, term=2, commit_lsn="0/1001F40")
    )
    assert r.status_code == 200
    assert tl.acceptor.commit_lsn < START + 8000
    await with_timeline.client.post("/v1/peer_info", json=peer_batch(commit_lsn="0/1001F40"))
    assert tl.acceptor.commit_lsn == START + 8000
    assert (await with_timeline.client.get(TL_PATH)).json()["commit_lsn"] == "0/1001F40"


async def test_peer_info_for_unknown_timelines_is_ignored(with_timeline: HttpNode) -> None:
    batch = peer_batch(timeline_id="ab" * 16)
    r = await with_timeline.client.post("/v1/peer_info", json=batch)
    assert r.json() == {"applied": 0, "ignored": 1}
    assert with_timeline.timeline.peers == {}


async def test_peer_info_batch_with_one_bad_entry_applies_the_rest(
    with_timeline: HttpNode,
) -> None:
    bad = peer_batch(flush_lsn=12, timeline_id="ab" * 16)["timelines"]
    good = peer_batch()["timelines"]
    assert isinstance(good, list)
    assert isinstance(bad, list)
    r = await with_timeline.client.post(
        "/v1/peer_info", json={**peer_batch(), "timelines": bad + good}
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["applied"], answer["rejected"]) == (1, 1)
    assert "timelines[0].flush_lsn" in answer["rejections"][0]
    assert set(with_timeline.timeline.peers) == {NodeId(2)}


@pytest.mark.parametrize(
    "batch",
    [
        peer_batch(term="1"),
        peer_batch(term=True),
        peer_batch(term=-1),
        peer_batch(term=2**64),
        peer_batch(last_log_term=None),
        peer_batch(commit_lsn="0/"),
        peer_batch(commit_lsn="100000000/0"),
        peer_batch(tenant_id="../" * 11),
        peer_batch(timeline_id=str(TIMELINE)[:-1]),
        {**peer_batch(), "timelines": [1]},
        {**peer_batch(), "timelines": [], "removed": [{"tenant_id": 1}]},
    ],
)
async def test_peer_info_leaves_out_malformed_entries_and_says_so(
    with_timeline: HttpNode, batch: object
) -> None:
    r = await with_timeline.client.post("/v1/peer_info", json=batch)
    assert r.status_code == 200, r.text
    assert r.json()["rejected"] == 1
    assert with_timeline.timeline.peers == {}
    await assert_serving(with_timeline)


@pytest.mark.parametrize(
    "batch",
    [
        {**peer_batch(), "node_id": "2"},
        {**peer_batch(), "node_id": 2**64},
        {**peer_batch(), "http_addr": "file:///etc/passwd"},
        {**peer_batch(), "wal_addr": "ws://a b"},
        {**peer_batch(), "timelines": {}},
        [peer_batch()],
    ],
)
async def test_peer_info_rejects_malformed_batches(with_timeline: HttpNode, batch: object) -> None:
    r = await with_timeline.client.post("/v1/peer_info", json=batch)
    assert r.status_code == 400, r.text
    assert with_timeline.timeline.peers == {}
    await assert_serving(with_timeline)


async def test_peer_info_roundtrip_of_encoder(with_timeline: HttpNode) -> None:
    from safekeeper_recovery.transport import build_peer_info_batch

    batch = build_peer_info_batch(with_timeline.registry, with_timeline.ctx.node_id,
                                  "http://h:1", "ws://h:2")
    r = await with_timeline.client.post("/v1/peer_info", json=encode_peer_info_batch(batch))
    assert r.json() == {"applied": 1, "ignored": 0}


# ---- hostile input --------------------------------------------------------------------------


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))



@pytest.mark.parametrize(
    "path",
    [
        f"/v1/tenant/{'a' * 31}/timeline/{TIMELINE}",
        f"/v1/tenant/{'a' * 33}/timeline/{TIMELINE}",
        f"/v1/tenant/{TENANT}/timeline/{'b' * 31}",
        f"/v1/tenant/{TENANT}/timeline/{'b' * 33}",
        f"/v1/tenant/{'g' * 32}/timeline/{TIMELINE}",
        f"/v1/tenant/%2e%2e/timeline/{TIMELINE}",
        f"/v1/tenant/{TENANT}/timeline/%2e%2e",
        f"/v1/tenant/{TENANT}/timeline/%2e%2e%2f%2e%2e%2fetc",
        f"/v1/tenant/{TENANT}/timeline/..%00",
        f"/v1/tenant/{TENANT}/timeline/{TIMELINE}%20",
    ],
)
async def test_bad_ids_are_rejected(with_timeline: HttpNode, tmp_path: Path, path: str) -> None:
    before = listing(tmp_path)
    for method in ("GET", "DELETE"):
        r = await with_timeline.client.request(method, path)
        assert r.status_code in (400, 404), (method, path, r.text)
        assert "error" in r.json()
    r = await with_timeline.client.post(f"{path}/term_bump", json={"term": 5})
    assert r.status_code in (400, 404)
    assert listing(tmp_path) == before
    assert with_timeline.timeline.acceptor.term == 0
    await assert_serving(with_timeline)


async def test_raw_dot_dot_path_never_reaches_a_timeline(with_timeline: HttpNode) -> None:
    # httpx would normalise "../" away, so send the raw path through the ASGI transport.
    url = httpx.URL("http://node/")
    url = url.copy_with(raw_path=f"/v1/tenant/{TENANT}/timeline/../../../etc".encode())
    r = await with_timeline.client.get(url)
    assert r.status_code in (400, 404)
    await assert_serving(with_timeline)


async def test_bad_ids_in_create_body(http_node: HttpNode) -> None:
    url = f"/v1/tenant/{TENANT}/timeline"
    for tid in ("../" * 11 + "ab", "a" * 31, "a" * 33, 5, None):
        r = await http_node.client.post(url, json={**CREATE_BODY, "timeline_id": tid})
        assert r.status_code == 400, r.text
    assert http_node.registry.timelines == {}


@pytest.mark.parametrize(
    "content",
    [
        b"{",
        b"not json",
        b"\xff\xfe{}",
        b'{"timeline_id": NaN}',
        b"[" * 8000 + b"]" * 8000,
        b"null",
        b"[]",
        b'"string"',
        b"",
    ],
)
async def test_malformed_json_is_400(http_node: HttpNode, content: bytes) -> None:
    for url in (f"/v1/tenant/{TENANT}/timeline", "/v1/peer_info"):
        r = await http_node.client.post(url, content=content)
        assert r.status_code == 400, (url, r.text)
        assert "error" in r.json()
    await assert_serving(http_node)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("start_lsn", 16777216),
        ("start_lsn", "0/0"),
        ("start_lsn", "x/y"),
        ("wal_seg_size", 1000),
        ("wal_seg_size", "16MiB"),
        ("wal_seg_size", True),
        ("pg_version", -1),
        ("system_id", 2**64),
    ],
)
async def test_create_rejects_wrong_types_and_values(
    http_node: HttpNode, field: str, value: object
) -> None:
    r = await http_node.client.post(
        f"/v1/tenant/{TENANT}/timeline", json={**CREATE_BODY, field: value}
    )
    assert r.status_code == 400, r.text
    assert field in r.json()["error"] or "start_lsn" in r.json()["error"]
    assert http_node.registry.timelines == {}


async def test_huge_bodies_are_413(nursery: trio.Nursery, tmp_path: Path) -> None:
    node = await start_http_node(nursery, tmp_path, max_body_size=4096)
    async with node.client:
        big = json.dumps({"node_id": 2, "pad": "x" * 10_000}).encode()
        r = await node.client.post("/v1/peer_info", content=big)
        assert r.status_code == 413
        assert "larger than 4096" in r.json()["error"]

        # Without Content-Length the limit applies while reading (raw ASGI: 10 chunks).
        status, body = await raw_asgi_post(node, "/v1/peer_info", [b" " * 1000] * 10)
        assert status == 413
        assert "larger than 4096" in json.loads(body)["error"]
        await assert_serving(node)


async def raw_asgi_post(
    node: HttpNode, path: str, chunks: list[bytes], *, stall: bool = False
) -> tuple[int, bytes]:
    """POST ``chunks`` as a streamed body with no Content-Length, straight to the app
    (``stall``: the last chunk says more is coming, and nothing ever comes)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"node")], "server": ("node", 80),
        "client": ("127.0.0.1", 1),
    }
    pending = list(chunks)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending) or stall}
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    with trio.fail_after(5):
        await node.app(scope, receive, send)  # type: ignore[arg-type]  # plain dicts as ASGI messages
    status = sent[0]["status"]
    assert isinstance(status, int)
    body = b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc]  # bytes bodies
    return status, body


async def test_default_limit_refuses_17_mib(http_node: HttpNode) -> None:
    r = await http_node.client.post("/v1/peer_info", content=b" " * (17 * 1024 * 1024))
    assert r.status_code == 413
    await assert_serving(http_node)


def big_peer_batch(n: int) -> dict[str, object]:
    """A valid batch of ``n`` entries (for timelines this node does not have)."""
    entry = peer_batch()["timelines"]
    assert isinstance(entry, list)
    return {**peer_batch(), "timelines": [
        {**entry[0], "timeline_id": f"{i:032x}"} for i in range(1, n + 1)
    ]}


async def test_each_endpoint_has_a_body_limit_sized_for_it(with_timeline: HttpNode) -> None:
    c = with_timeline.client
    padded = {**CREATE_BODY, "timeline_id": "ab" * 16, "pad": "x" * 20_000}
    r = await c.post(f"/v1/tenant/{TENANT}/timeline", json=padded)
    assert r.status_code == 413, r.text
    assert "larger than 16384" in r.json()["error"]
    r = await c.post(f"{TL_PATH}/term_bump", json={"pad": "x" * 20_000})
    assert r.status_code == 413, r.text
    r = await c.post("/v1/peer_info", json=big_peer_batch(200))  # ~50 KB: fine for a batch
    assert r.status_code == 200, r.text
    assert r.json()["ignored"] == 200


async def test_a_large_body_is_parsed_and_decoded_off_the_event_loop(
    with_timeline: HttpNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[bool] = []
    real = decode_peer_info_batch

    def recording(value: object) -> PeerInfoBatch:
        threads.append(threading.current_thread() is threading.main_thread())
        return real(value)

    monkeypatch.setattr(_http_app, "decode_peer_info_batch", recording)
    c = with_timeline.client
    assert (await c.post("/v1/peer_info", json=peer_batch())).status_code == 200
    assert (await c.post("/v1/peer_info", json=big_peer_batch(1000))).status_code == 200
    assert threads == [True, False]  # the small batch inline, the large one in a thread


async def test_a_body_of_empty_containers_is_refused_before_it_is_parsed(
    http_node: HttpNode,
) -> None:
    r = await http_node.client.post("/v1/peer_info", content=b"[" + b"{}," * 300_000 + b"{}]")
    assert r.status_code == 400, r.text
    assert "too many JSON objects" in r.json()["error"]


async def test_a_body_that_does_not_arrive_in_time_is_408(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    node = await start_http_node(nursery, tmp_path)
    node.ctx.body_timeout = 0.2
    async with node.client:
        status, body = await raw_asgi_post(node, "/v1/peer_info", [b"{"], stall=True)
        assert status == 408
        assert "not received within 0.2 s" in json.loads(body)["error"]
        await assert_serving(node)


async def test_unknown_route_and_wrong_method_answer_json(http_node: HttpNode) -> None:
    r = await http_node.client.get("/v1/nope")
    assert r.status_code == 404
    assert "error" in r.json()
    r = await http_node.client.put(TL_PATH)
    assert r.status_code == 405
    assert "error" in r.json()


async def test_node_keeps_serving_after_a_stream_of_bad_requests(with_timeline: HttpNode) -> None:
    c = with_timeline.client
    await c.post("/v1/peer_info", content=b"{")
    await c.get(f"/v1/tenant/{'z' * 32}/timeline/{TIMELINE}")
    await c.get(f"{TL_PATH}/digest", params={"from_lsn": "x", "until_lsn": "y"})
    await c.post(f"{TL_PATH}/term_bump", content=b"[" * 50_000)
    r = await c.get(TL_PATH)
    assert r.status_code == 200
    assert r.json()["acceptor_state"]["term"] == 0


@pytest.mark.parametrize("body", [
    {}, {"from": []}, {"from": "http://a:1"}, {"from": ["ws://a:1"]},
    {"from": ["http://a:1"], "max_rate": 0}, {"from": ["http://a:1"], "max_rate": True},
    {"from": ["http://a:1"] * 65}, {"from": ["http://"]}, {"from": ["http://a:99999"]},
    {"from": ["http://a:1/v1"]},
])
async def test_a_pull_with_a_bad_body_is_400_and_starts_nothing(
    with_timeline: HttpNode, body: object
) -> None:
    r = await with_timeline.client.post(f"{TL_PATH}/pull", json=body)
    assert r.status_code == 400, r.text
    assert "body." in r.json()["error"]


async def test_pull_and_snapshot_of_unknown_or_unpulled_timelines_are_404(
    with_timeline: HttpNode,
) -> None:
    other = f"/v1/tenant/{'ab' * 16}/timeline/{'cd' * 16}"
    assert (await with_timeline.client.get(f"{other}/snapshot")).status_code == 404
    # This node runs no pull service: its pull endpoints say so.
    r = await with_timeline.client.get(f"{TL_PATH}/pull")
    assert r.status_code == 404
    assert "does not pull" in r.json()["error"]
