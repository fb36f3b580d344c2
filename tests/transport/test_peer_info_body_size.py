"""Issue 20, defect 5: the peer-info body limit is sized from the largest legitimate body.

A full batch of 10,000 timelines with every value at its longest, encoded as our client
sends it, must fit the limit with room for about twice as many (the limit's documented
claim), pass the containers-per-KiB check and be applied by a node; a body over the limit
is refused with 413 before it is parsed.
"""

from __future__ import annotations

import json
from pathlib import Path

import trio

from safekeeper_recovery.core import Lsn, NodeId, TenantId, TenantTimelineId, Term, TimelineId
from safekeeper_recovery.transport import (
    PeerInfoBatch,
    PeerTimelineInfo,
    encode_peer_info_batch,
)
from safekeeper_recovery.transport._http_app import DEFAULT_MAX_BODY_SIZE
from safekeeper_recovery.transport._json import MAX_ADDR_LEN

from ._http_support import CREATE_BODY, TENANT, TIMELINE, asgi_client, start_http_node

TIMELINES = 10_000
LONGEST_LSN = Lsn(2**64 - 1)
LONGEST_TERM = Term(2**64 - 1)


def largest_batch(n: int) -> PeerInfoBatch:
    """A full batch of ``n`` timelines (the first ours) with every value at its longest."""
    ttids = [TenantTimelineId(TENANT, TIMELINE)] + [
        TenantTimelineId(TenantId(i.to_bytes(16, "big")), TimelineId((~i % 2**128).to_bytes(
            16, "big"))) for i in range(1, n)
    ]
    entries = tuple(
        PeerTimelineInfo(ttid, LONGEST_TERM, LONGEST_TERM, LONGEST_LSN, LONGEST_LSN,
                         LONGEST_LSN, LONGEST_LSN, LONGEST_LSN, LONGEST_LSN)
        for ttid in ttids
    )
    http = "http://" + "h" * (MAX_ADDR_LEN - len("http://"))
    wal = "ws://" + "w" * (MAX_ADDR_LEN - len("ws://"))
    return PeerInfoBatch(NodeId(2**64 - 1), http, wal, entries, session="f" * 16,
                         seq=2**63 - 1)


def as_sent(batch: PeerInfoBatch) -> bytes:
    """The body our client (``SafekeeperClient.post_peer_info``) sends for ``batch``."""
    return json.dumps(encode_peer_info_batch(batch)).encode()


async def test_a_full_batch_of_10000_timelines_at_their_longest_fits_and_is_applied(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    body = as_sent(largest_batch(TIMELINES))
    assert len(body) <= DEFAULT_MAX_BODY_SIZE // 2, (
        f"{len(body)} bytes: the limit no longer leaves room for 20,000 timelines"
    )
    node = await start_http_node(nursery, tmp_path)  # the default limits
    async with asgi_client(node.app) as c:
        assert (await c.post(f"/v1/tenant/{TENANT}/timeline", json=CREATE_BODY)
                ).status_code == 201
        r = await c.post("/v1/peer_info", content=body,
                         headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text[:500]
    assert r.json()["applied"] == 1  # our timeline; the others are not here (§9: ignored)
    assert r.json()["ignored"] == TIMELINES - 1
    assert node.timeline.peers[NodeId(2**64 - 1)].flush_lsn == LONGEST_LSN


async def test_a_body_over_the_limit_is_refused_before_parsing(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    body = as_sent(largest_batch(2 * TIMELINES + 2_000))
    assert len(body) > DEFAULT_MAX_BODY_SIZE
    node = await start_http_node(nursery, tmp_path)
    async with asgi_client(node.app) as c:
        r = await c.post("/v1/peer_info", content=body,
                         headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text[:500]
