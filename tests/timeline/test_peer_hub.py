"""Node-wide peer bookkeeping: what feeds the peer exchange, what peers' info does locally."""

from __future__ import annotations

import pytest
import trio

from safekeeper_recovery.core import (
    AppendRequest,
    Lsn,
    NodeId,
    PeerInfo,
    ProposerElected,
    TenantTimelineId,
    TermHistory,
    TermLsn,
    VoteRequest,
)
from safekeeper_recovery.testing import make_ttid
from safekeeper_recovery.timeline import (
    MemoryBackend,
    PeerHub,
    Timeline,
    TimelineParams,
    TimelineRegistry,
)

START = Lsn(0x100_0000)
SEG = 1 << 20
TTID = make_ttid(1)


def info(node: int, *, term: int = 1, flush: Lsn = START, commit: Lsn = START,
         at: float = 0.0) -> PeerInfo:
    return PeerInfo(NodeId(node), term, term, flush, commit, "http://p", "ws://p", at)


async def timeline(nursery: trio.Nursery, hub: PeerHub | None = None) -> Timeline:
    registry = TimelineRegistry(NodeId(1), MemoryBackend(), hub=hub)
    await nursery.start(registry.serve)
    tl, _ = await registry.create(TTID, TimelineParams(START, SEG))
    return tl


async def elect(tl: Timeline, term: int) -> None:
    await tl.process(VoteRequest(term))
    await tl.process(ProposerElected(term, START, TermHistory([TermLsn(term, START)])))


async def test_commit_lsn_follows_a_peers_unchanged_info_once_our_wal_catches_up(
    nursery: trio.Nursery,
) -> None:
    tl = await timeline(nursery)
    await elect(tl, 1)
    # The peer says 0x800 bytes are committed; we hold none of them yet.
    await tl.record_peer_info(info(2, flush=START + 0x800, commit=START + 0x800))
    assert tl.acceptor.commit_lsn <= START
    # Our WAL arrives (as recovery would write it); the peer does not resend anything.
    await tl.process(AppendRequest(1, START, Lsn(0), Lsn(0), b"x" * 0x800))
    assert tl.acceptor.commit_lsn == START + 0x800


async def test_only_changes_of_our_own_info_feed_the_exchange(nursery: trio.Nursery) -> None:
    hub = PeerHub()
    fed: list[TenantTimelineId] = []
    unsubscribe = hub.subscribe(fed.append)
    tl = await timeline(nursery, hub)
    assert fed == [TTID], "a new timeline is news to peers"
    fed.clear()
    await tl.record_peer_info(info(2, term=0, at=1.0))  # news to us, but not about us
    assert fed == []
    assert tl.changed.version > 0, "local waiters did hear about it"
    await elect(tl, 1)
    assert fed == [TTID, TTID]
    unsubscribe()
    await tl.bump_term(5)
    assert fed == [TTID, TTID], "unsubscribed"


async def test_a_peer_new_to_the_timeline_that_lags_us_is_sent_our_info(
    nursery: trio.Nursery,
) -> None:
    # A node that was down creates the timeline late: on an idle timeline nothing else
    # would publish our info to it before the next full resync, and it could not recover.
    hub = PeerHub()
    fed: list[TenantTimelineId] = []
    hub.subscribe(fed.append)
    tl = await timeline(nursery, hub)
    await elect(tl, 1)
    await tl.process(AppendRequest(1, START, Lsn(0), Lsn(0), b"x" * 0x800))
    fed.clear()
    await tl.record_peer_info(info(3, term=0, at=1.0))  # new, and behind us
    assert fed == [TTID]
    await tl.record_peer_info(info(3, term=0, at=2.0))  # known now
    await tl.record_peer_info(info(2, flush=START + 0x800, at=1.0))  # new, level with us
    assert fed == [TTID]


def test_an_entry_is_current_until_its_last_receipt_or_confirmation() -> None:
    hub = PeerHub(silence_wake=5.0)
    entry = info(2, at=10.0)
    assert hub.last_heard(entry) == 10.0
    assert hub.current(entry) is entry
    assert hub.confirm(NodeId(2), 12.0) is False, "first confirmation: no silence to end"
    assert hub.current(entry).received_at == 12.0
    assert hub.confirm(NodeId(2), 16.0) is False, "4 s of silence: nobody saw it dead"
    assert hub.confirm(NodeId(2), 21.5) is True, "5.5 s: it may have been counted dead"
    assert hub.last_heard(info(2, at=30.0)) == 30.0, "a newer receipt wins"
    assert hub.last_heard(info(3, at=1.0)) == 1.0, "confirmations are per node"


@pytest.mark.parametrize("silence", [1.0, 6.0])
async def test_unchanged_info_wakes_waiters_only_after_a_silence(
    nursery: trio.Nursery, silence: float
) -> None:
    tl = await timeline(nursery, PeerHub(silence_wake=5.0))
    await tl.record_peer_info(info(2, at=1.0))
    version = tl.changed.version
    await tl.record_peer_info(info(2, at=1.0 + silence))
    assert (tl.changed.version > version) == (silence > 5.0)
