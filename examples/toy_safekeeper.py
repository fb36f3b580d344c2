"""A toy trio safekeeper that is *not* safekeeper_recovery's, recovering one timeline from
real ``safekeeper-recovery serve`` nodes by embedding the recovery engine.

What the toy owns (as any other safekeeper would): its WAL (a ``bytearray`` in memory), its
acceptor state (term, term history, flush position) and its handling of the messages the
engine sends it as the donor term's leader: ``vote`` (VoteRequest), ``elected``
(ProposerElected: truncate, adopt the history) and a stream of ``AppendRequest``. It has no
proposer port and no disk, and it does not take part in the nodes' peer exchange: it learns
its peers' positions by polling their HTTP status (its own httpx client).

What it takes from safekeeper_recovery, public names only: ``RecoveryEngine``,
``RecoveryConfig``, ``LocalView`` and the ``RecoveryTarget`` / ``AcceptorSession``
Protocols (``safekeeper_recovery.recovery``); ``NetworkDonorConnector``
(``safekeeper_recovery.transport``); messages, ``Lsn``, ids, ``TermHistory``, ``PeerInfo``
and ``find_highest_common_point`` (``safekeeper_recovery.core``).

Run it against nodes that hold the timeline::

    python examples/toy_safekeeper.py --tenant-id T --timeline-id L --start-lsn 0/1000000 \\
        --peer 1=http://127.0.0.1:7676,ws://127.0.0.1:5454 --peer 2=...

It recovers until its flush position reaches the highest one its peers reported when it
started, prints one JSON line ``{"flush_lsn", "sha256", "term", "attempts", "outcome"}``
(the SHA-256 of its WAL from the start LSN, comparable with a node's ``digest``) and exits
0; 1 if it did not catch up within ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import trio

from safekeeper_recovery.core import (
    AcceptorError,
    AcceptorMessage,
    AppendRequest,
    AppendResponse,
    Lsn,
    NodeId,
    PeerInfo,
    ProposerElected,
    TenantId,
    TenantTimelineId,
    Term,
    TermHistory,
    TimelineId,
    VoteResponse,
    find_highest_common_point,
)
from safekeeper_recovery.recovery import (
    AcceptorSession,
    LocalView,
    RecoveryConfig,
    RecoveryEngine,
)
from safekeeper_recovery.transport import NetworkDonorConnector

TOY_NODE_ID = NodeId(99)
"""Donor selection leaves out the node itself by id: one the real nodes do not use."""
POLL_INTERVAL = 0.2


class ToyTimeline:
    """One timeline of the toy: WAL in memory, acceptor state, peers' last positions."""

    def __init__(self, ttid: TenantTimelineId, start_lsn: Lsn) -> None:
        self.ttid = ttid
        self.start_lsn = start_lsn
        self.term: Term = 0
        self.history = TermHistory.of((0, int(start_lsn)))
        self.elected_in: Term | None = None
        self.wal = bytearray()
        self.peers: dict[NodeId, PeerInfo] = {}
        self._changed = trio.Event()

    @property
    def flush_lsn(self) -> Lsn:
        return self.start_lsn + len(self.wal)

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def digest(self) -> str:
        return hashlib.sha256(self.wal).hexdigest()

    # ---- the toy's acceptor: the rules it must keep for recovery to be safe ----

    def vote(self, term: Term) -> VoteResponse:
        given = term > self.term
        if given:
            self.term = term
            self.changed()
        return VoteResponse(self.term, given, self.flush_lsn, self.flush_lsn,
                            self.history.up_to(self.flush_lsn))

    def elected(self, msg: ProposerElected) -> None:
        if msg.term != self.term:
            raise AcceptorError(f"elected in term {msg.term}, ours is {self.term}")
        point = find_highest_common_point(msg.term_history, self.history, self.flush_lsn)
        if point is None or point.lsn != msg.start_streaming_at:
            raise AcceptorError(f"start {msg.start_streaming_at} is not our common point {point}")
        del self.wal[int(msg.start_streaming_at) - int(self.start_lsn):]  # truncate first
        self.history = msg.term_history                                  # then adopt
        self.elected_in = msg.term
        self.changed()

    def append(self, msg: AppendRequest) -> AppendResponse:
        if msg.term != self.term or self.elected_in != self.term:
            raise AcceptorError(f"append in term {msg.term} before elected in it")
        if msg.begin_lsn != self.flush_lsn:
            raise AcceptorError(f"append at {msg.begin_lsn}, our WAL ends at {self.flush_lsn}")
        self.wal += msg.data  # "durable": the toy keeps WAL in memory only
        self.changed()
        return AppendResponse(self.term, self.flush_lsn, Lsn(0))


class ToySession:
    """:class:`~safekeeper_recovery.recovery.AcceptorSession` over a :class:`ToyTimeline`."""

    def __init__(self, timeline: ToyTimeline) -> None:
        self._tl = timeline

    async def vote(self, term: Term) -> VoteResponse:
        return self._tl.vote(term)

    async def elected(self, msg: ProposerElected) -> None:
        self._tl.elected(msg)

    async def run_acceptor(
        self,
        messages: trio.MemoryReceiveChannel[AppendRequest],
        replies: trio.MemorySendChannel[AcceptorMessage],
    ) -> None:
        async with replies:
            async for msg in messages:
                await replies.send(self._tl.append(msg))

    def proposer_connected(self) -> bool:
        return False  # the toy has no proposer port


class ToyTarget:
    """:class:`~safekeeper_recovery.recovery.RecoveryTarget` over a :class:`ToyTimeline`."""

    def __init__(self, timeline: ToyTimeline) -> None:
        self.timeline = timeline

    @property
    def ttid(self) -> TenantTimelineId:
        return self.timeline.ttid

    @property
    def node_id(self) -> NodeId:
        return TOY_NODE_ID

    async def local_view(self) -> LocalView:
        tl = self.timeline
        return LocalView(term=tl.term, last_log_term=tl.history.last_log_term(tl.flush_lsn),
                         flush_lsn=tl.flush_lsn, peers=tuple(tl.peers.values()),
                         connected_proposers=0, now=trio.current_time())

    async def wait_for_change(self) -> None:
        await self.timeline.wait_changed()

    def open_session(self) -> AbstractAsyncContextManager[AcceptorSession]:
        return self._session()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AcceptorSession]:
        yield ToySession(self.timeline)


async def poll_peer(timeline: ToyTimeline, node_id: NodeId, http_url: str, wal_url: str,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Keep ``timeline.peers[node_id]`` current from the node's timeline status. Never
    returns unless cancelled; a failed poll leaves the last info to age out."""
    ttid = timeline.ttid
    url = f"{http_url}/v1/tenant/{ttid.tenant_id}/timeline/{ttid.timeline_id}"
    started = False
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            try:
                response = await client.get(url)
                response.raise_for_status()
                doc = response.json()
                timeline.peers[node_id] = PeerInfo(
                    node_id=node_id,
                    term=int(doc["acceptor_state"]["term"]),
                    last_log_term=int(doc["last_log_term"]),
                    flush_lsn=Lsn.parse(doc["flush_lsn"]),
                    commit_lsn=Lsn.parse(doc["commit_lsn"]),
                    http_addr=http_url,
                    wal_addr=wal_url,
                    received_at=trio.current_time(),
                )
                timeline.changed()
            except (httpx.HTTPError, KeyError, TypeError, ValueError) as e:
                print(f"toy: peer {node_id}: {e!r}", file=sys.stderr)
            if not started:
                started = True
                task_status.started()
            await trio.sleep(POLL_INTERVAL)


def parse_peer(text: str) -> tuple[NodeId, str, str]:
    """``ID=HTTP_URL,WAL_URL``."""
    node_id, _, urls = text.partition("=")
    http_url, _, wal_url = urls.partition(",")
    if not (node_id.isdigit() and http_url and wal_url):
        raise argparse.ArgumentTypeError(f"--peer wants ID=HTTP_URL,WAL_URL, not {text!r}")
    return NodeId(int(node_id)), http_url, wal_url


async def recover(ttid: TenantTimelineId, start_lsn: Lsn,
                  peers: Sequence[tuple[NodeId, str, str]], timeout: float) -> dict[str, object]:
    """Run the engine on a fresh toy timeline until it holds what its peers held at the
    start; the toy's summary (``caught_up`` False if ``timeout`` ran out first)."""
    timeline = ToyTimeline(ttid, start_lsn)
    engine = RecoveryEngine(NetworkDonorConnector(), RecoveryConfig())
    caught_up = False
    async with trio.open_nursery() as nursery:
        for peer in peers:
            await nursery.start(poll_peer, timeline, *peer)
        target = max(p.flush_lsn for p in timeline.peers.values())
        nursery.start_soon(engine.supervise, ToyTarget(timeline))
        with trio.move_on_after(timeout):
            while timeline.flush_lsn < target:
                await timeline.wait_changed()
            # The attempt ends (and reports its outcome) once the donor has nothing more.
            status = engine.statuses.get(ttid)
            while status is None or status.last_outcome is None:  # no change event: poll
                await trio.sleep(0.05)
                status = engine.statuses.get(ttid)
            caught_up = True
        nursery.cancel_scope.cancel()
    status = engine.statuses.get(ttid)
    return {
        "caught_up": caught_up,
        "flush_lsn": str(timeline.flush_lsn),
        "target_lsn": str(target),
        "sha256": timeline.digest(),
        "term": timeline.term,
        "term_history": [[e.term, str(e.lsn)] for e in timeline.history],
        "attempts": status.attempts if status else 0,
        "outcome": status.last_outcome if status else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenant-id", required=True, type=TenantId.parse)
    parser.add_argument("--timeline-id", required=True, type=TimelineId.parse)
    parser.add_argument("--start-lsn", required=True, type=Lsn.parse)
    parser.add_argument("--peer", required=True, action="append", type=parse_peer)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    ttid = TenantTimelineId(args.tenant_id, args.timeline_id)
    summary = trio.run(recover, ttid, args.start_lsn, args.peer, args.timeout)
    print(json.dumps(summary))
    return 0 if summary["caught_up"] else 1


if __name__ == "__main__":
    sys.exit(main())
