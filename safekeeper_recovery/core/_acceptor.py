"""The acceptor state machine (sans-IO).

Theory of operation
-------------------
A proposer (or the recovery engine, acting as the leader of a donor's term) sends messages;
:meth:`Acceptor.handle` answers each with a :class:`Step`: the *effects* the caller must
carry out **in order** (write, flush, truncate WAL; persist state) and then the *reply* to
send, if any. The acceptor updates its own view as if every effect succeeded; if one fails,
the caller must stop using this acceptor (the timeline stops taking writes; a restart reloads
the truth from disk). Nothing here touches a disk, a clock or trio.

Callers process messages one at a time (the timeline's lock); the acceptor is not reentrant.

Rules (numbers appear in error messages and test names)
--------------------------------------------------------
R1  Greeting: tenant, timeline and (non-zero) segment size must match; a known pg major
    version must match; a new non-zero system_id is adopted and persisted.
R2  VoteRequest(t): WAL is flushed first. If ``t > term`` the term is raised and persisted
    **before** the reply (vote given). Otherwise no vote; the reply carries our term (equal
    to t when equal). The reply's history is cut at flush_lsn.
R3  ProposerElected(t, S, H): a higher t is adopted and persisted; a lower t is ignored
    silently (the next AppendResponse tells the sender). H must be non-empty and S must equal
    the recomputed highest common point of H and our history (else a transient refusal).
R4  A truncation point below commit_lsn is fatal for the timeline (never carried out).
R5  WAL is truncated at S, then H is adopted and persisted (history only after truncation).
R6  AppendRequest in a higher term than ours, or before ProposerElected of our term: refused.
    In a lower term: a term-only AppendResponse (flush 0, commit 0) and nothing changes.
R7  WAL is append-only: an append must begin exactly at write_lsn (rewrites and gaps refused).
R8  commit_lsn is monotonic and never exceeds flush_lsn; it is adopted from the leader's
    appends, or from a peer only when the peer's last_log_term equals ours.
R9  A plain AppendRequest is flushed before its reply; a no-flush one gets no reply.
R10 A term rises by at most ``MAX_TERM_STEP`` (2^32) per message or bump and never past
    ``MAX_TERM`` (2^64-1); anything more is refused and changes nothing. Terms are u64 and
    every election needs a higher one: one hostile VoteRequest of 2^64-1 would otherwise
    leave no term for any later leader (the timeline could never elect again), and a bump
    past 2^64-1 would store a term the control file cannot hold. At 2^32 per step the
    term space lasts 2^32 hostile votes (each fsynced); honest proposers step by one per
    election.
"""

from __future__ import annotations

from typing import Final, final

import attrs

from ._errors import AcceptorError, FatalTimelineError
from ._history import Term, TermHistory, find_highest_common_point
from ._ids import NodeId
from ._lsn import INVALID_LSN, Lsn
from ._messages import (
    AcceptorGreeting,
    AcceptorMessage,
    AppendRequest,
    AppendResponse,
    FlushWal,
    Greeting,
    ProposerElected,
    VoteRequest,
    VoteResponse,
)
from ._state import PersistentState, ServerInfo

__all__ = [
    "Acceptor",
    "Effect",
    "FlushEffect",
    "MAX_TERM",
    "MAX_TERM_STEP",
    "PeerUpdate",
    "PersistEffect",
    "Step",
    "TruncateEffect",
    "WriteEffect",
]

MAX_TERM: Final[Term] = 0xFFFF_FFFF_FFFF_FFFF
"""The highest term (u64): R10."""
MAX_TERM_STEP: Final[Term] = 1 << 32
"""The most a term may rise in one step (R10)."""


@final
@attrs.frozen
class WriteEffect:
    """Write ``data`` at ``lsn`` (buffered; no fsync)."""

    lsn: Lsn
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")


@final
@attrs.frozen
class FlushEffect:
    """fdatasync written WAL and record the flush position durably."""


@final
@attrs.frozen
class TruncateEffect:
    """Crash-safely truncate WAL at ``lsn`` (fsyncs)."""

    lsn: Lsn


@final
@attrs.frozen
class PersistEffect:
    """Durably persist ``state`` (control file) before anything after it."""

    state: PersistentState


Effect = WriteEffect | FlushEffect | TruncateEffect | PersistEffect


@final
@attrs.frozen
class Step:
    """What one handled message requires: effects in order, then the reply (if any)."""

    effects: tuple[Effect, ...] = ()
    reply: AcceptorMessage | None = None


@final
@attrs.frozen
class PeerUpdate:
    """The part of a peer's timeline info the acceptor cares about (reference §2.9)."""

    last_log_term: Term
    commit_lsn: Lsn
    backup_lsn: Lsn = INVALID_LSN
    peer_horizon_lsn: Lsn = INVALID_LSN
    remote_consistent_lsn: Lsn = INVALID_LSN


class Acceptor:
    """One timeline's acceptor. Build it from the persisted state and the storage positions.

    ``write_lsn`` / ``flush_lsn`` must be the WAL store's positions at load (after start-up
    recovery they are equal). In-memory horizons start at their persisted values.
    """

    def __init__(
        self, node_id: NodeId, state: PersistentState, *, write_lsn: Lsn, flush_lsn: Lsn
    ) -> None:
        if flush_lsn > write_lsn:
            raise ValueError(f"flush_lsn {flush_lsn} beyond write_lsn {write_lsn}")
        if state.commit_lsn > max(flush_lsn, state.timeline_start_lsn):
            raise ValueError(
                f"R8: persisted commit_lsn {state.commit_lsn} beyond flush_lsn {flush_lsn}"
            )
        self.node_id = node_id
        self.persisted = state
        self.write_lsn = write_lsn
        self._flush_lsn = flush_lsn
        self.commit_lsn = state.commit_lsn
        self.backup_lsn = state.backup_lsn
        self.peer_horizon_lsn = state.peer_horizon_lsn
        self.remote_consistent_lsn = state.remote_consistent_lsn
        self.term_start_lsn = Lsn(0)
        """Where the current leader's term starts (volatile: 0 after a restart)."""

    # ---- derived values ------------------------------------------------------------------

    @property
    def term(self) -> Term:
        return self.persisted.term

    @property
    def term_history(self) -> TermHistory:
        """The full persisted history (may reach beyond local WAL)."""
        return self.persisted.term_history

    @property
    def flush_lsn(self) -> Lsn:
        return max(self._flush_lsn, self.persisted.timeline_start_lsn)

    @property
    def last_log_term(self) -> Term:
        return self.persisted.term_history.last_log_term(self.flush_lsn)

    @property
    def wal_seg_size(self) -> int:
        return self.persisted.server.wal_seg_size

    def history_for_reporting(self) -> TermHistory:
        return self.persisted.term_history.up_to(self.flush_lsn)

    # ---- message handling ----------------------------------------------------------------

    def handle(
        self,
        msg: Greeting | VoteRequest | ProposerElected | AppendRequest | FlushWal,
        *,
        flush: bool = True,
    ) -> Step:
        """Process one message. ``flush=False`` makes an AppendRequest a no-flush append.

        Raises :class:`AcceptorError` for a refusal and :class:`FatalTimelineError` when the
        request would destroy committed WAL (R4); :class:`CommonPointError` when a leader's
        history gives one of our terms a different start LSN (corruption somewhere). In every
        case nothing changed: all checks run before any state does.
        """
        match msg:
            case Greeting():
                return self._greeting(msg)
            case VoteRequest():
                return self._vote(msg)
            case ProposerElected():
                return self._elected(msg)
            case AppendRequest():
                return self._append(msg, flush=flush)
            case FlushWal():
                effects = self._flush_effects()
                return Step(effects, self._append_response())
        raise TypeError(f"not a proposer message: {msg!r}")  # pragma: no cover

    def _greeting(self, msg: Greeting) -> Step:
        st = self.persisted
        if (msg.tenant_id, msg.timeline_id) != (st.tenant_id, st.timeline_id):
            raise AcceptorError(
                f"R1: greeting for {msg.tenant_id}/{msg.timeline_id} reached timeline "
                f"{st.tenant_id}/{st.timeline_id}"
            )
        if msg.wal_seg_size not in (0, st.server.wal_seg_size):
            raise AcceptorError(
                f"R1: greeting wal_seg_size {msg.wal_seg_size} differs from the timeline's "
                f"{st.server.wal_seg_size}"
            )
        old = st.server
        if msg.pg_version and old.pg_version and msg.pg_version // 10000 != old.pg_version // 10000:
            raise AcceptorError(
                f"R1: greeting pg_version {msg.pg_version} differs from the timeline's "
                f"{old.pg_version}"
            )
        effects: tuple[Effect, ...] = ()
        if msg.system_id and msg.system_id != old.system_id:
            new_server = ServerInfo(
                pg_version=msg.pg_version or old.pg_version,
                system_id=msg.system_id,
                wal_seg_size=old.wal_seg_size,
            )
            effects = (self._persist(attrs.evolve(st, server=new_server)),)
        return Step(effects, AcceptorGreeting(self.node_id, self.term))

    def _vote(self, msg: VoteRequest) -> Step:
        if self.term < msg.term:
            self._check_term_rise(msg.term, "VoteRequest")
        effects: list[Effect] = list(self._flush_effects())
        given = False
        if self.term < msg.term:
            effects.append(self._persist(attrs.evolve(self.persisted, term=msg.term)))
            given = True
        reply = VoteResponse(
            term=self.term,
            vote_given=given,
            flush_lsn=self.flush_lsn,
            truncate_lsn=self.peer_horizon_lsn,
            term_history=self.history_for_reporting(),
        )
        return Step(tuple(effects), reply)

    def _elected(self, msg: ProposerElected) -> Step:
        if self.term > msg.term:
            return Step()
        # Every check runs before any state changes: a refusal must leave nothing behind.
        self._check_term_rise(msg.term, "ProposerElected")
        if not msg.term_history:
            raise AcceptorError("R3: ProposerElected with an empty term history")
        if msg.term_history[-1].term != msg.term:
            raise AcceptorError(
                f"R3: ProposerElected term {msg.term} but its history ends in term "
                f"{msg.term_history[-1].term}"
            )
        lcp = find_highest_common_point(
            msg.term_history, self.history_for_reporting(), self.flush_lsn
        )
        expected = lcp.lsn if lcp is not None else msg.term_history[0].lsn
        if msg.start_streaming_at != expected:
            raise AcceptorError(
                f"R3: refusing ProposerElected with unexpected truncation point "
                f"{msg.start_streaming_at}: the common point is {expected}; "
                "restarting the handshake should help"
            )
        start = msg.start_streaming_at
        if start < self.commit_lsn:
            raise FatalTimelineError(
                f"R4: attempt to truncate committed WAL: truncation point {start} is below "
                f"commit_lsn {self.commit_lsn}"
            )
        effects: list[Effect] = []
        if self.term < msg.term:
            effects.append(self._persist(attrs.evolve(self.persisted, term=msg.term)))
        if not (start == self.write_lsn == self._flush_lsn):
            # Quick exit when nothing lies past S: the store never exposes bytes past its
            # recorded flush position, so there is nothing to cut.
            effects.append(TruncateEffect(start))
            self.write_lsn = start
            self._flush_lsn = start
        effects.append(
            self._persist(attrs.evolve(self.persisted, term_history=msg.term_history))
        )
        self.term_start_lsn = msg.term_history[-1].lsn
        return Step(tuple(effects))

    def _append(self, msg: AppendRequest, *, flush: bool) -> Step:
        history = self.persisted.term_history
        if self.term < msg.term or (
            self.term == msg.term and (not history or history[-1].term != msg.term)
        ):
            raise AcceptorError(
                f"R6: got AppendRequest of term {msg.term} before ProposerElected "
                f"(our term {self.term})"
            )
        if self.term > msg.term:
            return Step((), AppendResponse(self.term, Lsn(0), Lsn(0)))
        if msg.begin_lsn < self.write_lsn:
            raise AcceptorError(
                f"R7: append request rewrites WAL written before: begin {msg.begin_lsn}, "
                f"write_lsn {self.write_lsn}"
            )
        if msg.begin_lsn > self.write_lsn:
            raise AcceptorError(
                f"R7: append request creates a gap: begin {msg.begin_lsn}, "
                f"write_lsn {self.write_lsn}"
            )
        effects: list[Effect] = []
        if msg.data:
            effects.append(WriteEffect(msg.begin_lsn, msg.data))
            self.write_lsn = msg.end_lsn
        if flush:
            effects.extend(self._flush_effects())
        if msg.commit_lsn:
            effects.extend(self._update_commit_lsn(msg.commit_lsn))
        self.peer_horizon_lsn = max(self.peer_horizon_lsn, msg.truncate_lsn)
        reply = self._append_response() if flush else None
        return Step(tuple(effects), reply)

    # ---- peer info and maintenance -------------------------------------------------------

    def on_peer_update(self, peer: PeerUpdate) -> Step:
        """Apply a peer's info (R8): commit_lsn only from an equal last_log_term.

        Horizons are raised first, so a persist caused by commit_lsn carries them too.
        """
        self.backup_lsn = max(self.backup_lsn, peer.backup_lsn)
        self.peer_horizon_lsn = max(self.peer_horizon_lsn, peer.peer_horizon_lsn)
        self.remote_consistent_lsn = max(self.remote_consistent_lsn, peer.remote_consistent_lsn)
        effects: list[Effect] = []
        if peer.commit_lsn and peer.last_log_term and peer.last_log_term == self.last_log_term:
            effects.extend(self._update_commit_lsn(peer.commit_lsn))
        seg = self.wal_seg_size
        st = self.persisted
        if not effects and (
            self.backup_lsn - st.backup_lsn > seg
            or self.peer_horizon_lsn - st.peer_horizon_lsn > seg
            or self.remote_consistent_lsn - st.remote_consistent_lsn > seg
        ):
            effects.append(self._persist())
        return Step(tuple(effects))

    def advance_backup_lsn(self, lsn: Lsn) -> Step:
        """This node archived WAL up to ``lsn`` (verified): raise ``backup_lsn`` and persist
        it at once, so that removal and peers only ever act on a durable value (core
        ``_lifecycle`` rule L2). A lower or equal ``lsn`` changes nothing."""
        if lsn <= self.backup_lsn:
            return Step()
        self.backup_lsn = lsn
        return Step((self._persist(),))

    def bump_term(self, term: Term | None = None) -> Step:
        """Raise the term to ``term`` (or by one), persisted. Operators and tests use it.

        A lower or equal ``term`` changes nothing; a rise that R10 forbids (more than
        ``MAX_TERM_STEP``, or by one from ``MAX_TERM``) raises :class:`AcceptorError`.
        """
        new = max(self.term, term if term is not None else self.term + 1)
        if new == self.term:
            return Step()
        self._check_term_rise(new, "term bump to")
        return Step((self._persist(attrs.evolve(self.persisted, term=new)),))

    @property
    def in_memory_ahead(self) -> bool:
        """Whether a horizon (or commit_lsn) is ahead of its persisted value."""
        st = self.persisted
        return (
            self.commit_lsn,
            self.backup_lsn,
            self.peer_horizon_lsn,
            self.remote_consistent_lsn,
        ) != (st.commit_lsn, st.backup_lsn, st.peer_horizon_lsn, st.remote_consistent_lsn)

    def persist_in_memory(self) -> Step:
        """Persist in-memory horizons if any is ahead of the persisted one."""
        if not self.in_memory_ahead:
            return Step()
        return Step((self._persist(),))

    # ---- internals -----------------------------------------------------------------------

    def _check_term_rise(self, new: Term, what: str) -> None:
        """R10, for a term above ours (lower ones are R2/R3/R6's business)."""
        if new > MAX_TERM:
            raise AcceptorError(f"R10: {what} {new} is beyond the largest term {MAX_TERM}")
        if new - self.term > MAX_TERM_STEP:
            raise AcceptorError(
                f"R10: {what} {new} is more than {MAX_TERM_STEP} above our term {self.term}: "
                "refused, a jump that size would use up the term space"
            )

    def _flush_effects(self) -> tuple[Effect, ...]:
        if self.write_lsn == self._flush_lsn:
            return ()
        self._flush_lsn = self.write_lsn
        return (FlushEffect(),)

    def _commit_floor(self) -> Lsn:
        """What commit_lsn may not go below (R8: never decreases). A method so that the
        simulator's planted bug ``commit_regresses`` can override exactly this rule."""
        return self.commit_lsn

    def _update_commit_lsn(self, candidate: Lsn) -> list[Effect]:
        floor = self._commit_floor()
        new = min(max(candidate, floor), self.flush_lsn)
        assert new >= floor, f"R8: commit_lsn would go back: {self.commit_lsn}→{new}"
        self.commit_lsn = new
        persisted = self.persisted.commit_lsn
        crossed_term_start = new >= self.term_start_lsn > persisted
        # ints, not Lsn: under the planted bug ``commit_regresses`` new may be below persisted
        if crossed_term_start or int(new) - int(persisted) >= self.wal_seg_size:
            return [self._persist()]
        return []

    def _append_response(self) -> AppendResponse:
        return AppendResponse(self.term, self.flush_lsn, self.persisted.commit_lsn)

    def _persist(self, base: PersistentState | None = None) -> PersistEffect:
        """A change transaction: ``base`` (default: the persisted state) with the in-memory
        horizons overlaid becomes the new persisted state."""
        new = attrs.evolve(
            self.persisted if base is None else base,
            commit_lsn=self.commit_lsn,
            backup_lsn=self.backup_lsn,
            peer_horizon_lsn=self.peer_horizon_lsn,
            remote_consistent_lsn=self.remote_consistent_lsn,
        )
        self.persisted = new
        return PersistEffect(new)
