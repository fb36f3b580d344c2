"""The JSON shapes (pure): peer-info batches, creation bodies, acceptor state parsing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safekeeper_recovery.core import (
    Lsn,
    NodeId,
    TenantId,
    TenantTimelineId,
    TermHistory,
    TimelineId,
)
from safekeeper_recovery.timeline import TimelineParams
from safekeeper_recovery.transport import (
    PeerInfoBatch,
    PeerTimelineInfo,
    decode_create_timeline,
    decode_peer_info_batch,
    encode_create_timeline,
    encode_peer_info_batch,
    parse_acceptor_state,
    parse_term_history,
    term_history_json,
)

u64 = st.integers(0, 2**64 - 1)
lsns = u64.map(Lsn)
ids16 = st.binary(min_size=16, max_size=16)
infos = st.builds(
    PeerTimelineInfo,
    ttid=st.builds(TenantTimelineId, ids16.map(TenantId), ids16.map(TimelineId)),
    term=u64, last_log_term=u64, flush_lsn=lsns, commit_lsn=lsns, backup_lsn=lsns,
    peer_horizon_lsn=lsns, remote_consistent_lsn=lsns, local_start_lsn=lsns,
)
batches = st.builds(
    PeerInfoBatch,
    node_id=u64.map(NodeId),
    http_addr=st.just("http://127.0.0.1:7676"),
    wal_addr=st.just("ws://[::1]:5454"),
    timelines=st.lists(infos, max_size=4).map(tuple),
)


@given(batches)
def test_peer_info_batch_roundtrips_through_json_text(batch: PeerInfoBatch) -> None:
    text = json.dumps(encode_peer_info_batch(batch))
    assert decode_peer_info_batch(json.loads(text)) == batch


def test_peer_info_horizons_may_be_omitted() -> None:
    tid, lid = "ab" * 16, "cd" * 16
    batch = decode_peer_info_batch({
        "node_id": 3, "http_addr": "https://x", "wal_addr": "wss://x",
        "timelines": [{"tenant_id": tid, "timeline_id": lid, "term": 2, "last_log_term": 2,
                       "flush_lsn": "0/10", "commit_lsn": "0/8", "future_field": [1, 2]}],
    })
    [info] = batch.timelines
    assert info.backup_lsn == info.local_start_lsn == Lsn(0)
    peer = info.to_peer_info(batch.node_id, batch.http_addr, batch.wal_addr, received_at=12.5)
    assert peer.received_at == 12.5
    assert peer.node_id == 3
    assert peer.flush_lsn == Lsn(0x10)


@given(st.builds(TimelineParams, start_lsn=st.integers(1, 2**64 - 1).map(Lsn),
                 wal_seg_size=st.sampled_from([1 << 20, 1 << 24, 1 << 30]),
                 pg_version=st.integers(0, 2**32 - 1), system_id=u64),
       ids16.map(TimelineId))
def test_create_body_roundtrips(params: TimelineParams, timeline_id: TimelineId) -> None:
    body = json.loads(json.dumps(encode_create_timeline(timeline_id, params)))
    assert decode_create_timeline(body) == (timeline_id, params)


def test_create_body_defaults() -> None:
    tid, params = decode_create_timeline({"timeline_id": "01" * 16, "start_lsn": "0/1000000"})
    assert params == TimelineParams(Lsn(0x100_0000))
    assert str(tid) == "01" * 16


def test_term_history_roundtrip_and_validation() -> None:
    h = TermHistory.of((0, 0x100), (1, 0x100), (4, 0x2000))
    assert parse_term_history(json.loads(json.dumps(term_history_json(h)))) == h
    with pytest.raises(ValueError, match="terms must increase"):
        parse_term_history([{"term": 2, "lsn": "0/1"}, {"term": 1, "lsn": "0/2"}])
    with pytest.raises(ValueError, match=r"term_history\[0\].lsn"):
        parse_term_history([{"term": 2, "lsn": 5}])
    with pytest.raises(ValueError, match="expected a list"):
        parse_term_history({"term": 1})


def test_acceptor_state_parsing_is_lenient_about_other_fields() -> None:
    # A Neon-shaped donor status with fields we do not know.
    status = {
        "tenant_id": "x", "mconf": {"generation": 0},
        "acceptor_state": {"term": 3, "epoch": 3,
                           "term_history": [{"term": 1, "lsn": "0/14EE150"},
                                            {"term": 3, "lsn": "0/16B9188"}]},
        "walsenders": [{"Vanilla": {}}],
    }
    term, history = parse_acceptor_state(status)
    assert term == 3
    assert history == TermHistory.of((1, 0x14EE150), (3, 0x16B9188))
    bad_statuses: list[object] = [
        {}, {"acceptor_state": {"term": 1}},
        {"acceptor_state": {"term": "1", "term_history": []}}, [], None,
    ]
    for bad in bad_statuses:
        with pytest.raises(ValueError, match=r"acceptor_state|status"):
            parse_acceptor_state(bad)
