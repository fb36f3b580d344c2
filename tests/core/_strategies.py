"""Hypothesis strategies for the core's types and messages (attrs ``strategies.py`` style)."""

from __future__ import annotations

from hypothesis import strategies as st

from safekeeper_recovery.core import (
    MAX_SEND_SIZE,
    AcceptorGreeting,
    AppendRequest,
    AppendResponse,
    Greeting,
    Keepalive,
    Lsn,
    NodeId,
    PersistentState,
    ProposerElected,
    ServerInfo,
    StatusUpdate,
    TenantId,
    TermHistory,
    TermLsn,
    TimelineId,
    VoteRequest,
    VoteResponse,
    WalData,
)

U32 = 2**32 - 1
U64 = 2**64 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1

u32s = st.integers(0, U32)
u64s = st.integers(0, U64)
lsns = u64s.map(Lsn)
terms = u64s
node_ids = u64s.map(NodeId)
tenant_ids = st.binary(min_size=16, max_size=16).map(TenantId)
timeline_ids = st.binary(min_size=16, max_size=16).map(TimelineId)
timestamps = st.integers(I64_MIN, I64_MAX)
# Mostly small payloads (fast), sometimes one at the MAX_SEND_SIZE limit. The full-size
# one repeats a short drawn pattern: drawing 1 MiB byte by byte exceeds Hypothesis' entropy
# budget and fails its too_slow health check on a loaded machine.
payloads = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=1, max_size=64).map(
        lambda pattern: (pattern * (MAX_SEND_SIZE // len(pattern) + 1))[:MAX_SEND_SIZE]),
)
# A start position that leaves room for any payload without overflowing u64.
begin_lsns = st.integers(0, U64 - MAX_SEND_SIZE).map(Lsn)


@st.composite
def term_histories(
    draw: st.DrawFn, *, min_size: int = 0, max_size: int = 8, max_lsn: int = U64
) -> TermHistory:
    """A valid history: strictly increasing terms, non-decreasing LSNs (repeats allowed)."""
    n = draw(st.integers(min_size, max_size))
    ts = sorted(draw(st.sets(st.integers(0, U64), min_size=n, max_size=n)))
    ls = sorted(draw(st.lists(st.integers(0, max_lsn), min_size=n, max_size=n)))
    return TermHistory(TermLsn(t, Lsn(lsn)) for t, lsn in zip(ts, ls, strict=True))


greetings = st.builds(Greeting, tenant_ids, timeline_ids, u32s, u64s, u32s)
vote_requests = st.builds(VoteRequest, terms)
proposer_electeds = st.builds(ProposerElected, terms, lsns, term_histories())
append_requests = st.builds(AppendRequest, terms, begin_lsns, lsns, lsns, payloads)
acceptor_greetings = st.builds(AcceptorGreeting, node_ids, terms)
vote_responses = st.builds(VoteResponse, terms, st.booleans(), lsns, lsns, term_histories())
append_responses = st.builds(AppendResponse, terms, lsns, lsns)
wal_datas = st.builds(WalData, begin_lsns, lsns, timestamps, payloads)
keepalives = st.builds(Keepalive, lsns, timestamps, st.booleans())
status_updates = st.builds(StatusUpdate, lsns, lsns, lsns, timestamps, st.booleans())

proposer_messages = st.one_of(greetings, vote_requests, proposer_electeds, append_requests)
acceptor_messages = st.one_of(acceptor_greetings, vote_responses, append_responses)
stream_sender_messages = st.one_of(wal_datas, keepalives)
stream_reader_messages = status_updates

server_infos = st.builds(ServerInfo, u32s, u64s, u32s)
persistent_states = st.builds(
    PersistentState,
    tenant_id=tenant_ids,
    timeline_id=timeline_ids,
    term=terms,
    term_history=term_histories(),
    server=server_infos,
    timeline_start_lsn=lsns,
    local_start_lsn=lsns,
    commit_lsn=lsns,
    backup_lsn=lsns,
    peer_horizon_lsn=lsns,
    remote_consistent_lsn=lsns,
)
