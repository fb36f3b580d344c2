"""Fuzzing every route of the HTTP port of one real node (hypercorn on loopback).

Methods (right and wrong), ids (traversal, escapes, wrong lengths, unicode), query strings
(huge values, repeated keys) and bodies (malformed, huge, deeply nested, wrong types, the
right shape with hostile values). Every answer comes within a deadline and is never a 5xx;
a 4xx carries a JSON ``{"error": ...}`` (only requests that the HTTP parser itself refuses,
before the app sees them, get hypercorn's bare 4xx). After each example the node still
answers ``/v1/status`` and the untouched control timeline is healthy.
"""

from __future__ import annotations

import json
from typing import Final
from urllib.parse import quote

import httpx
import trio
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from safekeeper_recovery.core import Lsn, TimelineId

from ._node_thread import CONTROL_TIMELINE, SEG, START, TENANT, NodeThread
from .conftest import FUZZ

DEADLINE: Final = 15.0
T = str(TENANT)
FUZZ_TIMELINE = str(TimelineId(b"\xfe" * 16))
"""A timeline examples may create, bump and delete (never the control timeline)."""
ROUTES = [
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/v1/status"),
    ("GET", "/v1/timelines"),
    ("GET", "/v1/timelines/changes"),
    ("POST", "/v1/peer_info"),
    ("GET", "/v1/recovery"),
    ("POST", "/v1/tenant/{t}/timeline"),
    ("GET", "/v1/tenant/{t}/timeline/{l}"),
    ("DELETE", "/v1/tenant/{t}/timeline/{l}"),
    ("GET", "/v1/tenant/{t}/timeline/{l}/digest"),
    ("POST", "/v1/tenant/{t}/timeline/{l}/term_bump"),
    ("POST", "/v1/tenant/{t}/timeline/{l}/recovery/trigger"),
    ("POST", "/v1/tenant/{t}/timeline/{l}/recovery/cancel"),
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]

ids = st.one_of(
    st.sampled_from([T, FUZZ_TIMELINE, FUZZ_TIMELINE.upper(), "..", ".", "%2e%2e", "%2F",
                     "..%2f..", "%00", "~", "*", "a" * 31, "a" * 33, "g" * 32, f" {T}"]),
    st.text(alphabet="0123456789abcdefABCDEF", max_size=40),
    st.text(max_size=16),
    st.integers(33, 4000).map(lambda n: "f" * n),
).filter(lambda s: s.lower() != str(CONTROL_TIMELINE) and "/" not in s and "?" not in s)
lsn_texts = st.one_of(
    st.sampled_from(["0/1000000", "0/0", "FFFFFFFF/FFFFFFFF", "1/2/3", "-1/0", "0x1/0", " 0/1",
                     "100000000/0", "", "%2F"]),
    st.integers(1, 30_000).map(lambda n: "1" * n),
    st.text(max_size=16),
)
# Not "timeout": a valid one would make the change feed wait (long poll) past DEADLINE.
query_keys = st.sampled_from(["from_lsn", "until_lsn", "term", "after", "session", "x", ""]
                             ) | st.text(max_size=8)
queries = st.lists(st.tuples(query_keys, lsn_texts), max_size=8)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
hostile_ints = st.sampled_from([-1, 0, 1, 2**20, 2**30, 2**31, 2**63, 2**64 - 1, 2**64,
                                10**4000]) | st.integers()
create_bodies = st.fixed_dictionaries(
    {"timeline_id": ids | json_values, "start_lsn": lsn_texts | json_values},
    optional={
        "wal_seg_size": hostile_ints | json_values,
        "pg_version": hostile_ints,
        "system_id": hostile_ints,
        "extra": json_values,
    },
)
peer_entries = st.fixed_dictionaries(
    {
        "tenant_id": ids, "timeline_id": ids, "term": hostile_ints,
        "last_log_term": hostile_ints, "flush_lsn": lsn_texts, "commit_lsn": lsn_texts,
    },
    optional={"backup_lsn": lsn_texts, "local_start_lsn": lsn_texts | json_values},
)
peer_batches = st.fixed_dictionaries(
    {
        "node_id": hostile_ints,
        "http_addr": st.sampled_from(["http://127.0.0.1:1", "ftp://x", ""]) | st.text(),
        "wal_addr": st.sampled_from(["ws://127.0.0.1:1", "http://x"]) | st.text(),
        "timelines": st.lists(peer_entries, max_size=3) | json_values,
    }
)
# Well-formed creates of the fuzz timeline with extreme positions and segment sizes.
fuzz_creates = st.builds(
    lambda lsn, seg: json.dumps(
        {"timeline_id": FUZZ_TIMELINE, "start_lsn": lsn, "wal_seg_size": seg}
    ).encode(),
    st.sampled_from([str(START), "0/1", "FFFFFFFF/FFFFFFFF", "FFFFFFFF/FF000000"])
    | st.integers(0, 2**64 - 1).map(lambda n: str(Lsn(n))),
    st.sampled_from([SEG, 1 << 30, 1 << 31, 3, 0, -SEG]),
)
raw_bodies = st.one_of(
    fuzz_creates,
    st.none(),
    st.binary(max_size=64),
    st.sampled_from([b"{not json", b"[" * 100_000, b"{" * 50_000, b'"\xff\xfe"', b"NaN",
                     b'{"term": Infinity}', b" ", b"\x00", b'{"a":1}' * 1000]),
    st.integers(1, 300_000).map(lambda n: b'{"x": "' + b"y" * n + b'"}'),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"term": hostile_ints | json_values}).map(
        lambda v: json.dumps(v).encode()
    ),
    create_bodies.map(lambda v: json.dumps(v).encode()),
    peer_batches.map(lambda v: json.dumps(v).encode()),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes | None]:
    method, template = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 4)) == 0:
        method = draw(st.sampled_from(METHODS))
    # Valid ids half of the time, so that requests get past id validation too.
    tenant = draw(st.just(T) | ids)
    timeline = draw(st.just(FUZZ_TIMELINE) | ids)
    # Percent-encode what no HTTP client would send raw (control characters, non-ASCII):
    # raw bytes are hypercorn's parser's business, and the WAL port fuzz sends them.
    path = template.format(t=quote(tenant, safe="%~*."), l=quote(timeline, safe="%~*."))
    query = "&".join(f"{quote(k, safe='%')}={quote(v, safe='%/')}" for k, v in draw(queries))
    return method, path + (f"?{query}" if query else ""), draw(raw_bodies)


class OneChunk(httpx.AsyncByteStream):
    """A request body as a plain async iterator. httpx's own is an async generator, which
    trio warns about (an error here) when the server answers before the body was sent, as
    it should for a 413 refused from Content-Length alone."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> OneChunk:
        return self

    async def __anext__(self) -> bytes:
        if self._data is None:
            raise StopAsyncIteration
        data, self._data = self._data, None
        return data


async def exchange(node: NodeThread, method: str, target: str, body: bytes | None) -> None:
    with trio.fail_after(DEADLINE):
        async with node.http(DEADLINE) as http:
            try:
                request = http.build_request(method, target, content=body)
            except (httpx.InvalidURL, UnicodeError):
                event("refused by the client library")
                return  # nothing was sent
            if body:
                request.stream = OneChunk(body)
            response = await http.send(request)
            event(f"{method} {response.status_code}")
            assert response.status_code < 500, (method, target[:200], response.text[:500])
            if response.status_code >= 400 and method != "HEAD":
                if response.status_code in (400, 413, 414, 431) and not response.content:
                    pass  # refused by hypercorn's HTTP parser before the app saw it
                else:
                    assert "error" in response.json(), response.text[:500]
                    assert len(response.content) < 4096, "error messages cut untrusted input"
        # A new connection: the fuzzed one may be closed by the server after a response
        # whose request body it never read (a GET with a body, a 413).
        async with node.http(DEADLINE) as probe:
            status = await probe.get("/v1/status")
            assert status.status_code == 200
            control = await probe.get(f"/v1/tenant/{T}/timeline/{CONTROL_TIMELINE}")
            assert control.status_code == 200
            assert control.json()["broken"] is None


@settings(FUZZ, max_examples=250)
@given(requests())
@example(("GET", f"/v1/tenant/{T}/timeline/{FUZZ_TIMELINE}/digest?from_lsn=" + "1" * 60_000,
          None))
@example(("POST", f"/v1/tenant/{T}/timeline",
          json.dumps({"timeline_id": FUZZ_TIMELINE, "start_lsn": "FFFFFFFF/FFFFFFFF",
                      "wal_seg_size": SEG}).encode()))
@example(("POST", f"/v1/tenant/{T}/timeline",
          json.dumps({"timeline_id": FUZZ_TIMELINE, "start_lsn": str(START),
                      "wal_seg_size": 2**64}).encode()))
@example(("POST", f"/v1/tenant/{T}/timeline/{FUZZ_TIMELINE}/term_bump",
          json.dumps({"term": 2**64 - 1}).encode()))
@example(("POST", "/v1/peer_info", b"[" * 100_000))
@example(("DELETE", f"/v1/tenant/{T}/timeline/{FUZZ_TIMELINE}", None))
def test_every_route_answers_hostile_requests_with_a_json_4xx_and_keeps_serving(
    node: NodeThread, request: tuple[str, str, bytes | None]
) -> None:
    trio.run(exchange, node, *request)
