"""Issue 20, defect 1: a term of 2^64 (or 2^64-1) must never make a timeline unusable.

Real ``serve`` processes: a term bump past the u64 range and a VoteRequest of the largest
term are refused with a clear answer; the timeline keeps electing proposers and loads after
a restart; one bad entry of a peer-info batch does not cost the rest of the batch.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import httpx
import pytest

from safekeeper_recovery.core import (
    AcceptorGreeting,
    Greeting,
    TenantTimelineId,
    VoteRequest,
    decode_state,
    encode_state,
)
from safekeeper_recovery.proposer import ProposerError
from safekeeper_recovery.storage import FileControlFileStore
from safekeeper_recovery.testing import NodeProcess, make_ttid, wait_until
from safekeeper_recovery.transport import WalPushClosed, open_wal_push

from .conftest import ClusterFactory
from .hostile_support import one_node, restart_and_check, ttid_url, write_wal

U64_MAX = 2**64 - 1
VICTIM, OTHER = make_ttid(1), make_ttid(2)


def set_term_on_disk(node: NodeProcess, ttid: TenantTimelineId, term: int) -> None:
    """Rewrite a stopped node's control file of ``ttid`` with ``term`` (as a version
    without R10 could have left it: 2^64-1 is a valid u64, so it must load)."""
    store = FileControlFileStore(node.data_dir / str(ttid.tenant_id) / str(ttid.timeline_id))
    body = store.load()
    assert body is not None, f"no control file for {ttid} in {node.data_dir}"
    store.persist(encode_state(attrs.evolve(decode_state(body), term=term)))


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


@pytest.mark.slow
async def test_term_bump_by_one_from_the_largest_term_is_refused_and_peers_take_the_batch(
    make_cluster: ClusterFactory,
) -> None:
    # The second bump ({} at 2^64-1) on a running node: R10 no longer lets a node
    # reach 2^64-1, so the term is put on disk, where an older version could have left it.
    cluster = make_cluster(2)
    await cluster.start()
    for ttid in (VICTIM, OTHER):
        await cluster.create_timeline(ttid)
    node, peer = cluster[1], cluster[2]
    await node.terminate()
    set_term_on_disk(node, VICTIM, U64_MAX)
    await node.start()
    async with httpx.AsyncClient(base_url=node.http_url, timeout=10) as http:
        bump = await http.post(f"{ttid_url(VICTIM)}/term_bump", json={})
        assert bump.status_code == 409, bump.text
        assert "R10" in bump.json()["error"], bump.text
        status = (await http.get(ttid_url(VICTIM))).json()
        assert status["acceptor_state"]["term"] == U64_MAX, status
        assert status["broken"] is None, status

    # Node 1's peer-info batches carry 2^64-1 for VICTIM: node 2 takes every entry.
    async def peer_knows_node_1_at(ttid: TenantTimelineId, term: int) -> bool:
        async with peer.client() as client:
            peers = (await client.timeline_status(ttid))["peers"]
        assert isinstance(peers, list)
        return any(isinstance(p, dict) and p.get("sk_id") == 1 and p.get("term") == term
                   for p in peers)

    await wait_until(lambda: peer_knows_node_1_at(VICTIM, U64_MAX), 10,
                     message="node 2 to hold node 1's info of VICTIM at term 2^64-1")
    assert "out of range" not in peer.stderr()
    await write_wal(node, OTHER)  # the other timeline of the node takes WAL

    await node.restart()  # SIGKILL: it loads again, still at the largest term
    async with httpx.AsyncClient(base_url=node.http_url, timeout=10) as http:
        status = (await http.get(ttid_url(VICTIM))).json()
        assert status["acceptor_state"]["term"] == U64_MAX, status
        assert status["broken"] is None, status
        await write_wal(node, OTHER)
        other_term = (await http.get(ttid_url(OTHER))).json()["acceptor_state"]["term"]
    await wait_until(lambda: peer_knows_node_1_at(OTHER, other_term), 10,
                     message=f"node 2 to hold node 1's info of OTHER at term {other_term}")


@pytest.mark.slow
async def test_a_proposer_facing_the_largest_term_stops_with_an_error_that_says_so(
    tmp_path: Path,
) -> None:
    async with one_node(tmp_path, [VICTIM, OTHER]) as node:
        await node.terminate()
        set_term_on_disk(node, VICTIM, U64_MAX)
        await node.start()
        with pytest.raises(ProposerError) as stopped:
            await write_wal(node, VICTIM)
        assert "int too large" not in str(stopped.value)
        assert str(U64_MAX) in str(stopped.value), stopped.value
        await write_wal(node, OTHER)
