"""In-process clusters for recovery unit tests: timelines over memory storage."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence

import attrs
import pytest
import trio

from safekeeper_recovery.core import (
    AppendRequest,
    Lsn,
    NodeId,
    PeerInfo,
    ProposerElected,
    TermLsn,
    VoteRequest,
    VoteResponse,
    find_highest_common_point,
)
from safekeeper_recovery.testing import make_ttid
from safekeeper_recovery.timeline import (
    MemoryBackend,
    Timeline,
    TimelineParams,
    TimelineRegistry,
)

START = Lsn(0x100_0000)
SEG = 1 << 20
TTID = make_ttid(1)


def wal_bytes(seed: int, start: Lsn, n: int) -> bytes:
    """Deterministic bytes for [start, start + n), a function of (seed, position)."""
    out = bytearray()
    block = int(start) // 32
    while len(out) < (int(start) % 32) + n:
        out += hashlib.sha256(f"{seed}:{block}".encode()).digest()
        block += 1
    off = int(start) % 32
    return bytes(out[off : off + n])


@attrs.define
class Cluster:
    timelines: dict[int, Timeline]

    def __getitem__(self, node: int) -> Timeline:
        return self.timelines[node]

    def peer_info(self, node: int, now: float | None = None) -> PeerInfo:
        snap = self.timelines[node].snapshot()
        return PeerInfo(
            node_id=NodeId(node),
            term=snap.term,
            last_log_term=snap.last_log_term,
            flush_lsn=snap.flush_lsn,
            commit_lsn=snap.commit_lsn,
            http_addr=f"mem://{node}",
            wal_addr=f"mem://{node}",
            received_at=trio.current_time() if now is None else now,
        )

    async def exchange(self) -> None:
        """Every node tells every other node its info (one round of peer exchange)."""
        infos = {n: self.peer_info(n) for n in self.timelines}
        for n, tl in self.timelines.items():
            for m, info in infos.items():
                if m != n:
                    await tl.record_peer_info(info)

    async def propose(
        self, term: int, nodes: Sequence[int], nbytes: int, *, seed: int = 0,
        chunk: int = 64 * 1024,
    ) -> Lsn:
        """Act as the elected leader of ``term`` on ``nodes`` and write ``nbytes``."""
        votes: dict[int, VoteResponse] = {}
        for n in nodes:
            reply = await self.timelines[n].process(VoteRequest(term))
            assert isinstance(reply, VoteResponse), reply
            assert reply.term == term, reply
            votes[n] = reply
        best = max(votes.values(), key=lambda v: (v.term_history.last_log_term(v.flush_lsn),
                                                    v.flush_lsn))
        history = best.term_history.extended(TermLsn(term, best.flush_lsn))
        pos = best.flush_lsn
        for n in nodes:
            v = votes[n]
            lcp = find_highest_common_point(history, v.term_history, v.flush_lsn)
            assert lcp is not None
            assert lcp.lsn == best.flush_lsn, "test proposer needs equal starts"
            await self.timelines[n].process(ProposerElected(term, lcp.lsn, history))
        end = pos + nbytes
        while pos < end:
            n_ = min(chunk, int(end) - int(pos))
            data = wal_bytes(seed, pos, n_)
            for n in nodes:
                await self.timelines[n].process(AppendRequest(term, pos, Lsn(0), Lsn(0), data))
            pos = pos + n_
        return pos


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with trio.open_nursery() as nursery:
        timelines = {}
        for node in (1, 2, 3):
            reg = TimelineRegistry(NodeId(node), MemoryBackend())
            await nursery.start(reg.serve)
            tl, _ = await reg.create(TTID, TimelineParams(START, SEG))
            timelines[node] = tl
        yield Cluster(timelines)
        nursery.cancel_scope.cancel()
