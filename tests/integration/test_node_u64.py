"""Issue 20, defect 1: a term of 2^64 (or 2^64-1) must never make a timeline unusable.

Real ``serve`` processes: a term bump past the u64 range and a VoteRequest of the largest
term are refused with a clear answer; the timeline keeps electing proposers and loads after
a restart; one bad entry of a peer-info batch does not cost the rest of the batch.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from safekeeper_recovery.core import AcceptorGreeting, Greeting, VoteRequest
from safekeeper_recovery.transport import WalPushClosed, open_wal_push

from .hostile_support import one_node, restart_and_check, timeline, ttid_url, write_wal

U64_MAX = 2**64 - 1
VICTIM, OTHER = timeline(1), timeline(2)


@pytest.mark.slow
async def test_term_bump_past_the_u64_range_is_refused_and_the_timeline_reloads(
    tmp_path: Path,
) -> None:
    async with one_node(tmp_path, [VICTIM, OTHER]) as node:
        async with httpx.AsyncClient(base_url=node.http_url, timeout=10) as http:
            bump = f"{ttid_url(VICTIM)}/term_bump"
            top = await http.post(bump, json={"term": U64_MAX})
            assert top.status_code == 409, top.text
            assert "R10" in top.json()["error"]
            # The sequence of the issue: the largest term, then "one more".
            again = await http.post(bump, json={})
            assert again.status_code == 200, again.text
            assert again.json() == {"previous_term": 0, "current_term": 1}
        await restart_and_check(node, [VICTIM, OTHER])


@pytest.mark.slow
async def test_vote_request_of_the_largest_term_leaves_the_timeline_electable(
    tmp_path: Path,
) -> None:
    async with one_node(tmp_path, [VICTIM, OTHER]) as node:
        async with open_wal_push(node.wal_url, VICTIM.tenant_id, VICTIM.timeline_id) as conn:
            await conn.send(Greeting(VICTIM.tenant_id, VICTIM.timeline_id))
            assert isinstance(await conn.receive(), AcceptorGreeting)
            await conn.send(VoteRequest(U64_MAX))
            with pytest.raises(WalPushClosed) as closed:
                await conn.receive()
        assert closed.value.code == 4009, closed.value
        assert "R10" in closed.value.reason
        await write_wal(node, VICTIM)  # a proposer is still elected in the next term
        await restart_and_check(node, [VICTIM, OTHER])


@pytest.mark.slow
async def test_one_bad_peer_info_entry_does_not_cost_the_other_timelines_their_info(
    tmp_path: Path,
) -> None:
    good = {"term": 3, "last_log_term": 3, "flush_lsn": "0/1002000", "commit_lsn": "0/1001000"}
    async with one_node(tmp_path, [VICTIM, OTHER]) as node:
        batch = {
            "node_id": 7, "http_addr": "http://127.0.0.1:1", "wal_addr": "ws://127.0.0.1:1",
            "timelines": [
                {"tenant_id": str(VICTIM.tenant_id), "timeline_id": str(VICTIM.timeline_id),
                 **good, "term": U64_MAX + 1},
                {"tenant_id": str(OTHER.tenant_id), "timeline_id": str(OTHER.timeline_id),
                 **good},
            ],
        }
        async with httpx.AsyncClient(base_url=node.http_url, timeout=10) as http:
            r = await http.post("/v1/peer_info", json=batch)
            assert r.status_code == 200, r.text
            assert (r.json()["applied"], r.json()["rejected"]) == (1, 1), r.text
            assert "timelines[0].term" in r.json()["rejections"][0]
            status = (await http.get(ttid_url(OTHER))).json()
            assert [p["sk_id"] for p in status["peers"]] == [7], status
            victim = (await http.get(ttid_url(VICTIM))).json()
            assert victim["peers"] == [], victim
