"""The proposer driver: greet, elect, stream WAL, commit (reference Appendix C).

Theory of operation
-------------------
One task per safekeeper runs *sessions*: connect → Greeting → (wait for the term) →
VoteRequest → (wait for the election) → ProposerElected at the node's own start point →
stream. A coordinator decides the term once a quorum has greeted (every node that answers
within a short grace counts, rule P6), and elects once a quorum has voted (likewise); a node
that connects later (or reconnects) goes through the same session and joins the stream at
its common point.

Streaming is pipelined: up to ``window_bytes`` of WAL per node may be sent but not yet
reported flushed. Safekeepers answer appends in batches (one AppendResponse per fsync, not
per request), so progress is read from the flush positions the responses carry, never from
counting them. commit_lsn is the quorum-th highest flush in our term (rule E6 of
``_election``) and rides on the next append. A node that has been sent everything gets an
empty append whenever ``min(commit_lsn, its flush)`` moves (an acceptor clamps commit_lsn to
its flush when it processes the append), and a keepalive append when idle, which is also how
a newer term is noticed.

Rules
-----
P1  A term above ours in any greeting, vote or append response stops the run with
    :class:`NewerTermError`; so does a refused vote at our own term that we never asked for
    while we are not elected yet (another proposer may have taken our term). Once we are
    elected by a quorum of real grants, no other proposer can be elected in our term, so
    such a node (typically one that caught up by peer recovery, which votes locally in its
    donor's term: ours) joins like any late node, from its common point (reference
    Appendix C step 2; walproposer does the same).
P1a A refused vote is never counted as a vote, not even from a node we asked before (a
    reconnect): the acceptor does not record *whom* it voted for, and another proposer may
    have picked the same term and taken that node's vote. Such a node joins only once we
    are elected by a quorum of real grants (then no other proposer can be elected in our
    term, as in Neon's walproposer). Counting it was a two-leaders-in-one-term bug the
    simulator found (seed 1375).
P2  Fewer than a quorum of greetings or votes in the first round, or fewer than a quorum of
    reachable nodes for ``lost_quorum_timeout``, stops the run with :class:`LostQuorumError`.
P3  The proposer sends only WAL it holds: its WAL source's from propTermStartLsn on (made
    after the election; a streaming source grows and may release WAL the quorum has
    committed), and, for a node whose start point is below what the source holds, WAL
    fetched from a peer that holds it (the donor first) through ``fetch_wal``. Without
    ``fetch_wal`` such a node is excluded with a warning; a gap is never created. A source
    that fails stops the run with a :class:`ProposerError`.
P4  A failed node is retried with exponential back-off while the others go on; an auth or
    "timeline not found" refusal is permanent for that node.
P4a A node that refused WAL because its disk is past ``--max-disk-usage`` (close code
    4012) is retried like any failed node, but counts as unreachable for P2 until it
    takes WAL again (acknowledges everything sent to it): its reconnects, each refused
    at the first append, must not keep a quorum alive forever.
P5  The run succeeds once commit_lsn reaches the source's final end and a quorum was sent an
    append carrying it after reporting a flush at the end. Every node that joined the stream
    in this run and has not failed permanently then gets up to ``drain_timeout`` to catch
    up, also when it is down or reconnecting at that moment (a restarted node rejoins at its
    common point); a node never reached is not waited for. Connections are then closed
    cleanly (the server processes and flushes what it was sent), each within
    ``close_timeout``.
P6  The first round does not wait for every node: once a quorum has greeted (then voted),
    the rest get ``election_grace`` to answer, and the run goes on without those that did
    not (a black-holed node would otherwise hold the election until its connect times
    out). Paxos needs a quorum only; a node that answers later joins like a reconnecting
    one, at its common point. The grace lets every healthy node take part in the first
    round, so the term starts after the most advanced WAL any of them holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Literal, NoReturn

import attrs
import trio

from ..core import (
    INVALID_LSN,
    AcceptorGreeting,
    AcceptorMessage,
    AppendRequest,
    AppendResponse,
    DiskUsageExceeded,
    Lsn,
    ProposerElected,
    RemoteProtocolError,
    SafekeeperError,
    Term,
    VoteRequest,
    VoteResponse,
    leaves,
)
from ._connection import Connect, FetchWal, SafekeeperConnection
from ._election import Election, elect, next_term, quorum_commit_lsn, quorum_size
from ._errors import LostQuorumError, NewerTermError, ProposerError
from ._results import (
    NodeStatistics,
    NodeStatus,
    Phase,
    ProposerConfig,
    ProposeResult,
    ProposerStatistics,
)
from ._source import AnyWalSourceFactory, StreamingWalSource, as_streaming
from ._walgen import chunk_end, wal_source_factory

__all__ = ["Proposer", "propose"]

log = logging.getLogger(__name__)

_UNREACHABLE: Final = ("down", "failed")


class _NodeUnavailable(Exception):
    """A node cannot take part now (``permanent``: for the rest of the run)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@attrs.define
class _Node:
    url: str
    status: NodeStatus = "connecting"
    greeting_term: Term | None = None
    vote_requested: bool = False
    vote: VoteResponse | None = None
    session_flush: Lsn = INVALID_LSN
    """Flush this connection reported (its start point until the first AppendResponse)."""
    flush: Lsn | None = None
    """Highest flush acknowledged in our term, over all connections (commit evidence)."""
    known_flush: Lsn | None = None
    """Last flush heard of in any reply (for truncate_lsn)."""
    committed_end: bool = False
    """Was sent commit_lsn >= end after reporting a flush >= end (any connection)."""
    session_committed_end: bool = False
    joined: bool = False
    """Was streaming in some session of this run (a drop-out is waited for at the end, P5)."""
    last_error: str | None = None
    disk_refused: str | None = None
    """Why the node last refused WAL for its disk (P4a); ``None`` once it takes WAL."""


@attrs.define
class _Sent:
    """How far one connection has been sent WAL (shared by its sender and reply reader)."""

    pos: Lsn


class _Changed:
    """Wake every waiter whenever anything about the run changes."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._event.wait()


class Proposer:
    """A proposer for one timeline: elects itself over a quorum and writes its WAL source
    (by default ``total_bytes`` of deterministic WAL, seeded), then commits it.

    ``connect`` opens one safekeeper connection; ``fetch_wal`` (optional) reads WAL below
    our term start from a peer for nodes that lag (rule P3). ``wal_source`` (optional)
    builds the WAL to write once elected: a fixed-size ``WalSource``, or a
    ``StreamingWalSource`` that grows while the run goes on (a live PostgreSQL); by default
    ``config.wal_format`` decides (:func:`wal_source_factory`). Use :meth:`run` once.
    """

    def __init__(
        self,
        config: ProposerConfig,
        connect: Connect,
        *,
        fetch_wal: FetchWal | None = None,
        wal_source: AnyWalSourceFactory | None = None,
    ) -> None:
        self._cfg = config
        self._connect = connect
        self._fetch_wal = fetch_wal
        self._make_source: AnyWalSourceFactory = wal_source or wal_source_factory(config)
        self._source: StreamingWalSource | None = None
        self._nodes = [_Node(url) for url in config.safekeepers]
        self._quorum = quorum_size(len(self._nodes))
        self._changed = _Changed()
        self._term: Term | None = None
        self._election: Election | None = None
        self._commit_lsn = INVALID_LSN
        self._truncate_lsn = INVALID_LSN
        self._phase: Phase = "electing"
        self._closing = False
        self._fatal: ProposerError | None = None
        self._result: ProposeResult | None = None
        self._scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._started_at = 0.0
        self._ran = False

    # ---- public --------------------------------------------------------------------------

    def statistics(self) -> ProposerStatistics:
        el = self._election
        return ProposerStatistics(
            phase=self._phase,
            term=self._term,
            start_lsn=el.term_start_lsn if el else None,
            end_lsn=self._source.final_end if self._source else None,
            commit_lsn=self._commit_lsn,
            total_bytes=self._total_bytes(),
            nodes={n.url: NodeStatistics(n.status, n.flush, n.last_error) for n in self._nodes},
        )

    def _total_bytes(self) -> int:
        el, source = self._election, self._source
        if el is None or source is None or source.final_end is None:
            return self._cfg.total_bytes
        return int(source.final_end - el.term_start_lsn)

    async def run(self) -> ProposeResult:
        """Write and commit the WAL. Return the result; raise :class:`NewerTermError` or
        :class:`LostQuorumError` (both :class:`ProposerError`) when the run cannot finish.
        Every connection is closed on return."""
        if self._ran:
            raise RuntimeError("a Proposer runs once")
        self._ran = True
        self._started_at = trio.current_time()
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            self._nursery = nursery
            for node in self._nodes:
                nursery.start_soon(self._node_loop, node)
            nursery.start_soon(self._guard_quorum)
            nursery.start_soon(self._coordinate)
        if self._fatal is not None:
            self._phase = "failed"
            raise self._fatal
        assert self._result is not None, "P5: the run ended without a result or an error"
        self._phase = "done"
        return self._result

    # ---- coordination --------------------------------------------------------------------

    def _reachable(self) -> int:
        return sum(n.status not in _UNREACHABLE and n.disk_refused is None
                   for n in self._nodes)

    def _lost_quorum(self, count: int) -> LostQuorumError:
        reasons = {
            n.url: n.last_error or n.disk_refused or "no reply"
            for n in self._nodes
            if n.status in _UNREACHABLE or n.last_error or n.disk_refused
        }
        return LostQuorumError(count, len(self._nodes), self._quorum, reasons)

    async def _abort(self, exc: ProposerError) -> NoReturn:
        """Stop the whole run with ``exc`` (the first fatal error wins)."""
        if self._fatal is None:
            self._fatal = exc
            # Info, not error: the run raises ``exc``, and its caller reports it.
            log.info("proposer stopping: %s", exc)
        assert self._scope is not None
        self._scope.cancel()
        await trio.sleep_forever()

    async def _first_round(
        self, pending: Callable[[_Node], bool], answered: Callable[[_Node], bool]
    ) -> None:
        """Rule P6: until no node is ``pending``, or a quorum has ``answered`` and the rest
        had ``election_grace`` more to answer."""
        nodes = self._nodes

        def settled() -> bool:
            return not any(pending(n) for n in nodes)

        def quorum() -> bool:
            return sum(answered(n) for n in nodes) >= self._quorum

        while True:
            await self._changed.wait_for(lambda: settled() or quorum())
            if settled():
                return
            with trio.move_on_after(self._cfg.election_grace):
                await self._changed.wait_for(settled)
            if settled() or quorum():  # else one of the quorum failed meanwhile: wait again
                return

    async def _coordinate(self) -> None:
        nodes = self._nodes
        await self._first_round(
            pending=lambda n: n.status == "connecting",
            answered=lambda n: n.status not in ("connecting", *_UNREACHABLE),
        )
        greeted = [n for n in nodes if n.status not in ("connecting", *_UNREACHABLE)]
        if len(greeted) < self._quorum:
            await self._abort(self._lost_quorum(len(greeted)))
        try:
            self._term = next_term(n.greeting_term or 0 for n in greeted)
        except ValueError as e:
            await self._abort(ProposerError(str(e)))
        log.info("campaigning for term %d", self._term)
        self._changed.notify()

        await self._first_round(
            pending=lambda n: n.status in ("connecting", "greeted"),
            answered=lambda n: n.status == "voted",
        )
        votes = {n.url: n.vote for n in nodes if n.status == "voted" and n.vote is not None}
        if len(votes) < self._quorum:
            await self._abort(self._lost_quorum(len(votes)))
        election = elect(self._term, votes)
        expected = self._cfg.expect_start_lsn
        if expected is not None and election.term_start_lsn != expected:
            await self._abort(
                ProposerError(
                    f"the quorum's WAL ends at {election.term_start_lsn}, not at the requested "
                    f"start LSN {expected}"
                )
            )
        try:
            source = as_streaming(self._make_source(election), election.term_start_lsn)
        except ValueError as e:
            await self._abort(
                ProposerError(f"cannot write WAL from {election.term_start_lsn}: {e}")
            )
        self._source = source
        self._election = election
        self._truncate_lsn = election.truncate_lsn
        self._phase = "streaming"
        log.info("%s; writing from %s (ends at %s)", election, election.term_start_lsn,
                 source.final_end or "the end of the source")
        self._changed.notify()
        assert self._nursery is not None
        self._nursery.start_soon(self._run_source, source)

        def committed() -> bool:
            final = source.final_end
            return (
                final is not None
                and self._commit_lsn >= final
                and sum(n.committed_end for n in nodes) >= self._quorum
            )

        await self._changed.wait_for(committed)
        end = source.final_end
        assert end is not None
        self._phase = "finishing"
        self._changed.notify()
        # A node that dropped out of the stream (down, in back-off, or re-handshaking) is a
        # laggard too: waiting only on "streaming" ones would finish in the instant a
        # restarted node is reconnecting and leave it behind although it could catch up (P5).
        with trio.move_on_after(self._cfg.drain_timeout):
            await self._changed.wait_for(
                lambda: all(
                    n.session_committed_end or not n.joined or n.status == "failed" for n in nodes
                )
            )
        self._result = ProposeResult(
            term=election.term,
            start_lsn=election.term_start_lsn,
            end_lsn=end,
            commit_lsn=self._commit_lsn,
            flush_lsns={n.url: n.flush for n in nodes},
            bytes=int(end - election.term_start_lsn),
            seconds=trio.current_time() - self._started_at,
            committed=tuple(n.url for n in nodes if n.committed_end),
        )
        log.info("%s", self._result.summary())
        # P5: close cleanly, all within close_timeout (a sender stuck in a send that never
        # completes is cancelled with the rest).
        self._closing = True
        self._changed.notify()
        with trio.move_on_after(self._cfg.close_timeout):
            await self._changed.wait_for(lambda: all(n.status != "streaming" for n in nodes))
        assert self._scope is not None
        self._scope.cancel()

    async def _run_source(self, source: StreamingWalSource) -> None:
        """P3: a failing source stops the run."""
        try:
            await source.run(self._changed.notify)
        except Exception as exc:  # the source's own failure; Cancelled propagates
            await self._abort(ProposerError(f"the WAL source failed: {_describe(exc)}"))

    async def _guard_quorum(self) -> None:
        """P2: fail when fewer than a quorum stay reachable for ``lost_quorum_timeout``."""
        while True:
            await self._changed.wait_for(
                lambda: self._phase == "finishing" or self._reachable() < self._quorum
            )
            if self._phase == "finishing":
                return
            with trio.move_on_after(self._cfg.lost_quorum_timeout):
                await self._changed.wait_for(lambda: self._reachable() >= self._quorum)
                continue
            await self._abort(self._lost_quorum(self._reachable()))

    def _update_commit(self) -> None:
        el = self._election
        assert el is not None
        flushes = [n.flush for n in self._nodes if n.flush is not None]
        commit = quorum_commit_lsn(flushes, self._quorum, el.term_start_lsn)
        if commit > self._commit_lsn:
            self._commit_lsn = commit
            assert self._source is not None
            self._source.committed(commit)
        known = [n.known_flush for n in self._nodes]
        if all(f is not None for f in known):
            low = min(f for f in known if f is not None)
            self._truncate_lsn = max(self._truncate_lsn, min(low, self._commit_lsn))

    # ---- one node ------------------------------------------------------------------------

    async def _node_loop(self, node: _Node) -> None:
        """Run sessions with one node until the run ends; P4 back-off between failures."""
        failures = 0
        while True:
            try:
                async with self._connect(node.url) as conn:
                    await self._session(node, conn)
                    if self._closing:
                        with trio.move_on_after(self._cfg.close_timeout):
                            await conn.aclose()
                        node.status = "closed"
                        self._changed.notify()
                        return
            except Exception as exc:  # any failure of this node; Cancelled propagates
                was_streaming = node.status == "streaming"
                permanent = _is_permanent(exc)
                if any(_close_code(leaf) == DiskUsageExceeded.close_code
                       for leaf in leaves(exc)):
                    node.disk_refused = _describe(exc)  # P4a
                self._mark_down(node, _describe(exc), permanent=permanent)
                if permanent:
                    return
                failures = 1 if was_streaming else failures + 1
            except BaseExceptionGroup as group:  # holds a Cancelled: not an Exception
                # The run is ending (a cancel from above: lost quorum, a newer term, the
                # caller) at the moment this node's session also failed. The failure no
                # longer matters and must not escape in place of the run's own outcome:
                # only the cancellation goes on (a trio cancel scope absorbs it).
                cancelled, failure = group.split(trio.Cancelled)
                if cancelled is not None:
                    if failure is not None:
                        log.debug("%s failed as the run ended: %s", node.url, _describe(failure))
                    raise cancelled from None
                raise
            delay = min(self._cfg.reconnect_max, self._cfg.reconnect_min * 2 ** (failures - 1))
            await trio.sleep(delay)

    def _mark_down(self, node: _Node, reason: str, *, permanent: bool) -> None:
        status: Literal["failed", "down"] = "failed" if permanent else "down"
        # One warning per failure: retries that fail the same way add nothing to the log.
        repeated = node.status == status and node.last_error == reason
        node.status = status
        node.last_error = reason
        node.vote = None
        node.session_flush = INVALID_LSN
        node.session_committed_end = False
        if not repeated:
            log.warning("safekeeper %s %s: %s", node.url,
                        "failed" if permanent else "unavailable (retrying)", reason)
        self._changed.notify()

    async def _receive(self, conn: SafekeeperConnection) -> AcceptorMessage:
        with trio.fail_after(self._cfg.response_timeout):
            return await conn.receive()

    def _refusal_is_fatal(self) -> bool:
        """P1: a refused vote at our own term, from a node we never asked, stops the run
        only while we are not elected. A method so that the simulator's planted bug
        ``refusal_stops_proposer`` (the old rule: always) can override exactly this."""
        return self._election is None

    async def _session(self, node: _Node, conn: SafekeeperConnection) -> None:
        """One connection's life: handshake, then stream until cancelled or broken."""
        cfg = self._cfg
        await conn.send(cfg.greeting())
        greeting = await self._receive(conn)
        if not isinstance(greeting, AcceptorGreeting):
            raise RemoteProtocolError(f"expected a greeting, got {type(greeting).__name__}")
        node.greeting_term = greeting.term
        node.status = "greeted"
        node.last_error = None
        self._changed.notify()

        await self._changed.wait_for(lambda: self._term is not None)
        term = self._term
        assert term is not None
        if greeting.term > term:
            await self._abort(NewerTermError(greeting.term, term, where=f"greeting {node.url}"))
        asked_before, node.vote_requested = node.vote_requested, True
        await conn.send(VoteRequest(term))
        vote = await self._receive(conn)
        if not isinstance(vote, VoteResponse):
            raise RemoteProtocolError(f"expected a vote, got {type(vote).__name__}")
        if vote.term > term:
            await self._abort(NewerTermError(vote.term, term, where=f"vote {node.url}"))
        if not vote.vote_given and not asked_before and self._refusal_is_fatal():
            await self._abort(
                NewerTermError(vote.term, None, where=f"vote {node.url}, term already taken")
            )
        if not vote.vote_given:  # P1a: join only once elected without this vote
            if not asked_before:
                log.info("safekeeper %s is already in our term %s (peer recovery); it joins "
                         "as a late node", node.url, term)
            node.status = "refused"
            self._changed.notify()
            await self._changed.wait_for(lambda: self._election is not None)
        node.vote = vote
        node.known_flush = vote.flush_lsn
        node.status = "voted"
        self._changed.notify()

        await self._changed.wait_for(lambda: self._election is not None)
        el = self._election
        assert el is not None
        start = el.start_for(vote)
        if start < el.term_start_lsn and self._fetch_wal is None:
            raise _NodeUnavailable(
                f"needs WAL {start}..{el.term_start_lsn} from before our term and no WAL "
                "fetcher is configured; excluded",
                permanent=True,
            )
        await conn.send(ProposerElected(el.term, start, el.term_history))
        node.session_flush = start
        node.status = "streaming"
        node.joined = True
        log.info("streaming to %s from %s", node.url, start)
        self._changed.notify()

        sent = _Sent(start)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receive_appends, node, conn, sent)
            await self._send_appends(node, conn, sent)
            nursery.cancel_scope.cancel()  # closing (P5): stop reading replies

    async def _send_appends(self, node: _Node, conn: SafekeeperConnection, sent: _Sent) -> None:
        """Stream to one node until the run is closing (returns) or the connection breaks."""
        el, source = self._election, self._source
        assert el is not None
        assert source is not None
        window = self._cfg.window_bytes
        applied = INVALID_LSN  # the commit_lsn this node has been able to apply, as far as sent

        async def send(data: bytes) -> None:
            if data:  # backpressure: at most window_bytes beyond the node's reported flush
                await self._changed.wait_for(
                    lambda: self._closing or sent.pos - node.session_flush < window
                )
                if self._closing:
                    return
            await conn.send(
                AppendRequest(el.term, sent.pos, self._commit_lsn, self._truncate_lsn, data)
            )
            sent.pos += len(data)

        while not self._closing:
            held_from = max(el.term_start_lsn, source.first)
            end = source.final_end
            if end is not None and applied >= end and not node.session_committed_end:
                # The source's end became known after the commit reaching it was applied.
                node.committed_end = node.session_committed_end = True
                self._changed.notify()
            if sent.pos < held_from:
                stop = Lsn(min(int(held_from), sent.pos + self._cfg.fetch_chunk))
                data = await self._fetch(node, sent.pos, stop)
                base = sent.pos
                while sent.pos < stop and not self._closing:
                    piece_end = chunk_end(sent.pos, stop)
                    await send(data[sent.pos - base : piece_end - base])
            elif sent.pos < source.available:
                stop = chunk_end(sent.pos, source.available)
                await send(source.read_wal(sent.pos, stop))
            elif (target := min(self._commit_lsn, node.session_flush)) > applied:
                # The acceptor clamps commit_lsn to its flush when it processes the append,
                # so commit is re-sent whenever either moves (P5).
                await send(b"")
                applied = target
                if end is not None and target >= end:
                    node.committed_end = node.session_committed_end = True
                    self._changed.notify()
            else:
                with trio.move_on_after(self._cfg.keepalive_interval) as idle:
                    await self._wait_applicable_moves(node, target, sent.pos, end)
                if idle.cancelled_caught:
                    await send(b"")  # keepalive: also how a newer term shows up (P1)

    async def _wait_applicable_moves(
        self, node: _Node, seen: Lsn, sent: Lsn, end: Lsn | None
    ) -> None:
        """Until closing, the commit_lsn ``node`` could apply differs from ``seen``, or the
        source has WAL beyond ``sent`` or an end other than ``end``."""
        source = self._source
        assert source is not None
        await self._changed.wait_for(
            lambda: self._closing
            or min(self._commit_lsn, node.session_flush) != seen
            or source.available > sent
            or source.final_end != end
        )

    async def _fetch(self, node: _Node, start: Lsn, end: Lsn) -> bytes:
        """P3: WAL below what the source holds from the donor, else a node that holds it."""
        el = self._election
        assert el is not None
        if self._fetch_wal is None:
            raise _NodeUnavailable(
                f"needs WAL {start}..{end} that the proposer no longer holds and no WAL "
                "fetcher is configured; excluded",
                permanent=True,
            )
        sources = [el.donor] + [
            n.url
            for n in self._nodes
            if n.status == "streaming" and n.flush is not None and n.flush >= end
        ]
        errors: list[str] = []
        for url in dict.fromkeys(sources):
            if url == node.url:
                continue
            try:
                data = await self._fetch_wal(url, start, end, el.term)
            except Exception as exc:  # try the next source; Cancelled propagates
                errors.append(f"{url}: {_describe(exc)}")
                continue
            if len(data) == end - start:
                return data
            errors.append(f"{url}: returned {len(data)} bytes, wanted {end - start}")
        raise _NodeUnavailable(
            f"cannot fetch WAL {start}..{end} for catch-up: {'; '.join(errors) or 'no source'}"
        )

    async def _receive_appends(
        self, node: _Node, conn: SafekeeperConnection, sent: _Sent
    ) -> NoReturn:
        el = self._election
        assert el is not None
        while True:
            with trio.move_on_after(self._cfg.response_timeout) as quiet:
                msg = await conn.receive()
            if quiet.cancelled_caught:
                if sent.pos > node.session_flush:
                    raise _NodeUnavailable(
                        f"no AppendResponse for {self._cfg.response_timeout}s with "
                        f"{sent.pos - node.session_flush} bytes unflushed"
                    )
                continue
            if not isinstance(msg, AppendResponse):
                raise RemoteProtocolError(f"expected AppendResponse, got {type(msg).__name__}")
            if msg.term > el.term:
                await self._abort(NewerTermError(msg.term, el.term, where=f"append {node.url}"))
            if msg.term != el.term:
                raise RemoteProtocolError(f"AppendResponse of term {msg.term}, ours {el.term}")
            if msg.flush_lsn > sent.pos:
                raise RemoteProtocolError(
                    f"AppendResponse flush {msg.flush_lsn} beyond what was sent ({sent.pos})"
                )
            if node.disk_refused is not None and msg.flush_lsn >= sent.pos:
                node.disk_refused = None  # P4a: it took all we sent
            node.session_flush = msg.flush_lsn
            node.known_flush = msg.flush_lsn
            node.flush = max(node.flush or INVALID_LSN, msg.flush_lsn)
            self._update_commit()
            self._changed.notify()


def _describe(exc: BaseException) -> str:
    leaf = leaves(exc)[0]
    text = str(leaf)
    code = _close_code(leaf)
    if code is not None and str(code) not in text:
        text = f"{text} (close code {code})"
    if isinstance(leaf, _NodeUnavailable):
        return text
    return f"{type(leaf).__name__}: {text}" if text else type(leaf).__name__


def _is_permanent(exc: BaseException) -> bool:
    """P4: a failure retrying cannot mend (each error type says so: ``permanent``)."""
    return any(
        isinstance(leaf, SafekeeperError | _NodeUnavailable) and leaf.permanent
        for leaf in leaves(exc)
    )


def _close_code(exc: BaseException) -> int | None:
    """The WebSocket close code an error carries, if it crossed the wire."""
    return exc.close_code if isinstance(exc, SafekeeperError) else None


async def propose(
    config: ProposerConfig,
    connect: Connect,
    *,
    fetch_wal: FetchWal | None = None,
    wal_source: AnyWalSourceFactory | None = None,
) -> ProposeResult:
    """Run one :class:`Proposer` to the end (see :meth:`Proposer.run`)."""
    return await Proposer(config, connect, fetch_wal=fetch_wal, wal_source=wal_source).run()
