"""The sans-IO acceptor: one test per rule R1-R9 of ``_acceptor.py`` and per DESIGN choice.

A tiny harness (:class:`Node`) carries out every effect on an in-memory model of the WAL (a
bytearray) and the control file, and checks after each step that the acceptor's view of its
positions and persisted state is exactly what the effects produced.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from safekeeper_recovery.core import (
    INVALID_LSN,
    MAX_TERM,
    MAX_TERM_STEP,
    Acceptor,
    AcceptorError,
    AcceptorGreeting,
    AppendRequest,
    AppendResponse,
    CommonPointError,
    FatalTimelineError,
    FlushEffect,
    FlushWal,
    Greeting,
    Lsn,
    NodeId,
    PeerUpdate,
    PersistEffect,
    PersistentState,
    ProposerElected,
    ServerInfo,
    Step,
    TenantId,
    TermHistory,
    TermLsn,
    TimelineId,
    TruncateEffect,
    VoteRequest,
    VoteResponse,
    WriteEffect,
    find_highest_common_point,
)

TENANT = TenantId(b"\x11" * 16)
TIMELINE = TimelineId(b"\x22" * 16)
SEG = 16 * 1024 * 1024
S = Lsn(0x1000)  # where every test timeline starts
SERVER = ServerInfo(pg_version=160002, system_id=42, wal_seg_size=SEG)

ProposerInput = Greeting | VoteRequest | ProposerElected | AppendRequest | FlushWal


# ---- harness --------------------------------------------------------------------------------


@attrs.define
class Node:
    """An acceptor plus a model of its disk that the effects are applied to."""

    acc: Acceptor
    base: Lsn
    wal: bytearray = attrs.field(factory=bytearray)
    flushed: Lsn = INVALID_LSN
    persisted: PersistentState | None = None
    log: list[Step] = attrs.field(factory=list)

    @classmethod
    def new(cls, node_id: int = 1, *, start: Lsn = S, server: ServerInfo = SERVER) -> Node:
        state = PersistentState.new_timeline(TENANT, TIMELINE, start, server)
        acc = Acceptor(NodeId(node_id), state, write_lsn=start, flush_lsn=start)
        return cls(acc, start, flushed=start, persisted=state)

    @property
    def write_lsn(self) -> Lsn:
        return self.base + len(self.wal)

    def durable_wal(self) -> bytes:
        return bytes(self.wal[: self.flushed - self.base])

    def apply(self, step: Step) -> Step:
        for effect in step.effects:
            match effect:
                case WriteEffect(lsn=lsn, data=data):
                    assert lsn == self.write_lsn, f"write at {lsn}, disk ends at {self.write_lsn}"
                    self.wal += data
                case FlushEffect():
                    self.flushed = self.write_lsn
                case TruncateEffect(lsn=lsn):
                    assert self.base <= lsn <= self.write_lsn, f"truncate outside WAL at {lsn}"
                    del self.wal[lsn - self.base :]
                    self.flushed = lsn
                case PersistEffect(state=state):
                    self.persisted = state
        self.check()
        self.log.append(step)
        return step

    def check(self) -> None:
        acc = self.acc
        assert acc.write_lsn == self.write_lsn
        assert acc.flush_lsn == max(self.flushed, acc.persisted.timeline_start_lsn)
        assert acc.persisted == self.persisted
        assert acc.commit_lsn <= acc.flush_lsn, "R8: commit_lsn beyond flush_lsn"
        assert acc.persisted.commit_lsn <= acc.commit_lsn

    def handle(self, msg: ProposerInput, *, flush: bool = True) -> Step:
        return self.apply(self.acc.handle(msg, flush=flush))

    def peer(self, update: PeerUpdate) -> Step:
        return self.apply(self.acc.on_peer_update(update))

    def restart(self) -> None:
        """Crash and start again: unflushed WAL and in-memory values are lost."""
        assert self.persisted is not None
        del self.wal[self.flushed - self.base :]
        self.acc = Acceptor(
            self.acc.node_id, self.persisted, write_lsn=self.flushed, flush_lsn=self.flushed
        )
        self.check()

    # -- a proposer's moves (reference Appendix C), for one acceptor ----------------------

    def vote(self, term: int) -> VoteResponse:
        reply = self.handle(VoteRequest(term)).reply
        assert isinstance(reply, VoteResponse)
        return reply

    def elect(self, term: int, history: TermHistory | None = None) -> TermHistory:
        """Win ``term`` on this node alone and send ProposerElected; return the history."""
        vote = self.vote(term)
        assert vote.vote_given
        if history is None:
            history = vote.term_history.extended(TermLsn(term, vote.flush_lsn))
        self.handle(ProposerElected(term, start_point(history, vote), history))
        return history

    def append(
        self, term: int, data: bytes, *, commit: int = 0, truncate: int = 0, flush: bool = True
    ) -> Step:
        msg = AppendRequest(term, self.acc.write_lsn, Lsn(commit), Lsn(truncate), data)
        return self.handle(msg, flush=flush)


def start_point(history: TermHistory, vote: VoteResponse) -> Lsn:
    lcp = find_highest_common_point(history, vote.term_history, vote.flush_lsn)
    return lcp.lsn if lcp is not None else history[0].lsn


def snapshot(acc: Acceptor) -> dict[str, Any]:
    return dict(vars(acc))


def kinds(step: Step) -> list[str]:
    return [type(e).__name__ for e in step.effects]


def persists(step: Step) -> list[PersistentState]:
    return [e.state for e in step.effects if isinstance(e, PersistEffect)]


# ---- R1: greeting ------------------------------------------------------------------------


def test_r1_greeting_is_answered_with_node_id_and_term() -> None:
    node = Node.new(7)
    node.elect(3)
    step = node.handle(Greeting(TENANT, TIMELINE, 160002, 42, SEG))
    assert step == Step((), AcceptorGreeting(NodeId(7), 3))


@pytest.mark.parametrize(
    "greeting",
    [
        Greeting(TenantId(b"\x99" * 16), TIMELINE),
        Greeting(TENANT, TimelineId(b"\x99" * 16)),
    ],
)
def test_r1_greeting_for_another_timeline_is_refused(greeting: Greeting) -> None:
    with pytest.raises(AcceptorError, match="R1: greeting for"):
        Node.new().handle(greeting)


def test_r1_greeting_with_another_segment_size_is_refused_and_zero_means_any() -> None:
    node = Node.new()
    with pytest.raises(AcceptorError, match="R1: greeting wal_seg_size"):
        node.handle(Greeting(TENANT, TIMELINE, wal_seg_size=SEG // 2))
    assert node.handle(Greeting(TENANT, TIMELINE, wal_seg_size=0)).effects == ()


def test_r1_greeting_with_another_pg_major_version_is_refused() -> None:
    node = Node.new()
    with pytest.raises(AcceptorError, match="R1: greeting pg_version 150004"):
        node.handle(Greeting(TENANT, TIMELINE, pg_version=150004))
    # Same major version, other minor: fine. Unknown (0) on either side: fine.
    assert node.handle(Greeting(TENANT, TIMELINE, pg_version=160009)).reply is not None
    assert node.handle(Greeting(TENANT, TIMELINE, pg_version=0)).reply is not None
    unknown = Node.new(server=ServerInfo(pg_version=0, wal_seg_size=SEG))
    assert unknown.handle(Greeting(TENANT, TIMELINE, pg_version=150004)).reply is not None


def test_r1_greeting_adopts_and_persists_a_new_system_id() -> None:
    node = Node.new()
    step = node.handle(Greeting(TENANT, TIMELINE, pg_version=160005, system_id=77))
    [state] = persists(step)
    assert state.server == ServerInfo(pg_version=160005, system_id=77, wal_seg_size=SEG)
    assert isinstance(step.reply, AcceptorGreeting)
    # Nothing new (same id, or 0): nothing persisted.
    assert node.handle(Greeting(TENANT, TIMELINE, system_id=77)).effects == ()
    assert node.handle(Greeting(TENANT, TIMELINE, system_id=0)).effects == ()
    # A new id without a pg version keeps the known version.
    [state] = persists(node.handle(Greeting(TENANT, TIMELINE, system_id=78)))
    assert state.server.pg_version == 160005


# ---- R2: voting ------------------------------------------------------------------------------


def test_r2_vote_for_a_higher_term_is_given_and_persisted_before_the_reply() -> None:
    node = Node.new()
    step = node.handle(VoteRequest(5))
    assert kinds(step) == ["PersistEffect"]
    assert persists(step)[0].term == 5
    assert step.reply == VoteResponse(5, True, S, S, TermHistory.of((0, S)))
    assert node.acc.term == 5


@pytest.mark.parametrize("asked", [5, 4])
def test_r2_vote_for_an_equal_or_lower_term_is_refused_with_our_term(asked: int) -> None:
    node = Node.new()
    node.vote(5)
    before = snapshot(node.acc)
    step = node.handle(VoteRequest(asked))
    assert step.effects == ()
    assert isinstance(step.reply, VoteResponse)
    assert not step.reply.vote_given
    assert step.reply.term == 5  # equals the asked term when equal: recovery relies on it
    assert snapshot(node.acc) == before


def test_r2_wal_is_flushed_before_voting() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"x" * 100, flush=False)
    assert node.flushed == S
    step = node.handle(VoteRequest(2))
    # The flush comes first, then the durable vote, then (after all effects) the reply.
    assert kinds(step) == ["FlushEffect", "PersistEffect"]
    assert isinstance(step.reply, VoteResponse)
    assert step.reply.flush_lsn == S + 100 == node.flushed


def test_r2_even_a_refused_vote_flushes_the_wal_first() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"y" * 10, flush=False)
    step = node.handle(VoteRequest(1))
    assert kinds(step) == ["FlushEffect"]
    assert isinstance(step.reply, VoteResponse)
    assert step.reply.flush_lsn == S + 10


def test_r2_vote_reply_history_is_cut_at_flush_lsn() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 0x100)
    # A leader of term 3 whose donor was at S+0x500 (further than us) is adopted in full.
    full = TermHistory.of((0, S), (1, S), (3, S + 0x500))
    node.vote(3)
    node.handle(ProposerElected(3, S + 0x100, full))
    assert node.acc.term_history == full
    reply = node.vote(4)
    assert reply.term_history == TermHistory.of((0, S), (1, S))
    assert reply.flush_lsn == S + 0x100


def test_r2_vote_reply_truncate_lsn_is_the_in_memory_peer_horizon() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 50, truncate=S + 20)
    assert node.vote(2).truncate_lsn == S + 20


def test_vote_is_durable_before_the_reply() -> None:
    node = Node.new()
    step = node.handle(VoteRequest(9))
    [state] = persists(step)
    assert state.term == 9
    assert isinstance(step.reply, VoteResponse)
    assert step.reply.vote_given


def test_vote_for_the_same_term_twice_after_a_restart_is_refused() -> None:
    """Neon's ``test_voting``: the vote survives a restart because it was persisted."""
    node = Node.new()
    first = node.handle(VoteRequest(1))
    [state] = persists(first)
    reborn = Acceptor(NodeId(1), state, write_lsn=S, flush_lsn=S)
    again = reborn.handle(VoteRequest(1))
    assert again.effects == ()
    assert isinstance(again.reply, VoteResponse)
    assert not again.reply.vote_given
    assert again.reply.term == 1
    higher = reborn.handle(VoteRequest(2))
    assert isinstance(higher.reply, VoteResponse)
    assert higher.reply.vote_given


# ---- R3: ProposerElected checks --------------------------------------------------------------


def test_r3_proposer_elected_in_a_lower_term_is_ignored_silently() -> None:
    node = Node.new()
    node.elect(5)
    before = snapshot(node.acc)
    step = node.handle(ProposerElected(4, S, TermHistory.of((0, S), (4, S))))
    assert step == Step()
    assert snapshot(node.acc) == before


def test_r3_proposer_elected_in_a_higher_term_raises_and_persists_the_term() -> None:
    node = Node.new()
    history = TermHistory.of((0, S), (2, S))
    step = node.handle(ProposerElected(2, S, history))
    states = persists(step)
    assert [s.term for s in states] == [2, 2]
    assert states[-1].term_history == history
    assert node.acc.term == 2


def test_r3_proposer_elected_with_an_empty_history_is_refused() -> None:
    node = Node.new()
    node.vote(1)
    with pytest.raises(AcceptorError, match="R3: ProposerElected with an empty term history"):
        node.handle(ProposerElected(1, S, TermHistory(())))


def test_r3_proposer_elected_whose_history_does_not_end_in_its_term_is_refused() -> None:
    node = Node.new()
    node.vote(2)
    with pytest.raises(AcceptorError, match="R3: ProposerElected term 2 but its history ends"):
        node.handle(ProposerElected(2, S, TermHistory.of((0, S), (1, S))))


@pytest.mark.parametrize("offset", [-1, 1, 0x50])
def test_r3_proposer_elected_at_an_unexpected_truncation_point_is_refused(offset: int) -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"q" * 0x40)
    node.vote(2)
    history = TermHistory.of((0, S), (1, S), (2, S + 0x40))
    with pytest.raises(AcceptorError, match="R3: refusing ProposerElected with unexpected"):
        node.handle(ProposerElected(2, S + 0x40 + offset, history))
    node.handle(ProposerElected(2, S + 0x40, history))  # the right point is accepted


def test_r3_without_a_common_term_the_start_of_the_leaders_history_is_expected() -> None:
    node = Node.new()
    node.vote(5)
    foreign = TermHistory.of((4, S), (5, S))  # shares no term with our [(0, S)]
    with pytest.raises(AcceptorError, match="the common point is 0/1000"):
        node.handle(ProposerElected(5, S + 1, foreign))
    node.handle(ProposerElected(5, S, foreign))
    assert node.acc.term_history == foreign


def test_r3_history_disagreeing_on_a_terms_start_raises_common_point_error() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"z" * 10)
    node.vote(2)
    before = snapshot(node.acc)
    bogus = TermHistory.of((0, S), (1, S + 5), (2, S + 10))
    with pytest.raises(CommonPointError, match="same term 1 has different start LSNs"):
        node.handle(ProposerElected(2, S + 10, bogus))
    assert snapshot(node.acc) == before


# ---- R4 / R5: truncation ---------------------------------------------------------------------


def _node_with_committed_wal() -> Node:
    """Term 1 wrote 0x100 bytes from S, all committed."""
    node = Node.new()
    node.elect(1)
    node.append(1, b"c" * 0x100, commit=S + 0x100)
    assert node.acc.commit_lsn == S + 0x100
    return node


def test_r4_truncation_below_commit_lsn_is_fatal_and_changes_nothing() -> None:
    node = _node_with_committed_wal()
    node.vote(2)
    before = snapshot(node.acc)
    # A leader of term 2 that started from a node which had only S+0x80: it would cut
    # committed WAL at S+0x80.
    history = TermHistory.of((0, S), (1, S), (2, S + 0x80))
    with pytest.raises(FatalTimelineError, match="R4: attempt to truncate committed WAL"):
        node.acc.handle(ProposerElected(2, S + 0x80, history))
    assert snapshot(node.acc) == before


def test_r5_wal_is_truncated_before_the_history_is_adopted() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 0x100)  # uncommitted term-1 tail
    winner = TermHistory.of((0, S), (1, S), (3, S + 0x80))
    commit_before = node.acc.commit_lsn
    step = node.handle(ProposerElected(3, S + 0x80, winner))
    assert kinds(step) == ["PersistEffect", "TruncateEffect", "PersistEffect"]
    term_persist, truncate, history_persist = step.effects
    assert isinstance(term_persist, PersistEffect)
    assert term_persist.state.term == 3
    assert term_persist.state.term_history == TermHistory.of((0, S), (1, S))  # not yet
    assert truncate == TruncateEffect(S + 0x80)
    assert isinstance(history_persist, PersistEffect)
    assert history_persist.state.term_history == winner
    assert node.write_lsn == node.flushed == S + 0x80
    assert node.acc.term_start_lsn == S + 0x80
    assert node.acc.commit_lsn == commit_before  # an election never commits anything
    assert step.reply is None


def test_r5_nothing_past_the_start_point_means_no_truncation() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 0x10)
    node.vote(2)
    step = node.handle(ProposerElected(2, S + 0x10, TermHistory.of((0, S), (1, S), (2, S + 0x10))))
    assert kinds(step) == ["PersistEffect"]


def test_r5_unflushed_wal_past_the_start_point_is_truncated() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 0x10)
    node.append(1, b"b" * 0x10, flush=False)
    # No vote in between (it would flush): ProposerElected in a higher term directly.
    step = node.handle(ProposerElected(2, S + 0x10, TermHistory.of((0, S), (1, S), (2, S + 0x10))))
    assert TruncateEffect(S + 0x10) in step.effects
    assert node.write_lsn == S + 0x10


# ---- R6: append terms ------------------------------------------------------------------------


def test_r6_append_in_a_higher_term_than_ours_is_refused() -> None:
    node = Node.new()
    node.elect(1)
    with pytest.raises(AcceptorError, match="R6: got AppendRequest of term 2"):
        node.append(2, b"x")


def test_r6_append_before_proposer_elected_of_our_term_is_refused() -> None:
    node = Node.new()
    node.elect(1)
    node.vote(2)  # voted, but no ProposerElected of term 2 yet
    with pytest.raises(AcceptorError, match="R6: got AppendRequest of term 2 before"):
        node.append(2, b"x")


def test_r6_append_with_an_empty_persisted_history_is_refused_not_crashed() -> None:
    legacy = attrs.evolve(
        PersistentState.new_timeline(TENANT, TIMELINE, S, SERVER),
        term=1,
        term_history=TermHistory(()),
    )
    acc = Acceptor(NodeId(1), legacy, write_lsn=S, flush_lsn=S)
    with pytest.raises(AcceptorError, match="R6"):
        acc.handle(AppendRequest(1, S, Lsn(0), Lsn(0), b"x"))


def test_r6_append_in_a_lower_term_gets_a_term_only_response_and_changes_nothing() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 10)
    node.elect(2)
    before = snapshot(node.acc)
    step = node.append(1, b"b" * 10, commit=S + 10)
    assert step == Step((), AppendResponse(2, Lsn(0), Lsn(0)))
    assert snapshot(node.acc) == before


# ---- R7: append-only ---------------------------------------------------------------------------


def test_r7_append_that_rewrites_written_wal_is_refused() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 10)
    with pytest.raises(AcceptorError, match="R7: append request rewrites WAL written before"):
        node.handle(AppendRequest(1, S + 9, Lsn(0), Lsn(0), b"b"))


def test_r7_append_that_leaves_a_gap_is_refused() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 10)
    with pytest.raises(AcceptorError, match="R7: append request creates a gap"):
        node.handle(AppendRequest(1, S + 11, Lsn(0), Lsn(0), b"b"))


def test_r7_unflushed_bytes_still_count_as_written() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 10, flush=False)
    with pytest.raises(AcceptorError, match="rewrites"):
        node.handle(AppendRequest(1, S, Lsn(0), Lsn(0), b"b"))
    node.append(1, b"b" * 10, flush=False)
    assert node.write_lsn == S + 20


# ---- R8: commit_lsn ---------------------------------------------------------------------------


def test_r8_commit_lsn_never_exceeds_flush_lsn() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 10, commit=S + 1000)
    assert node.acc.commit_lsn == S + 10
    node.append(1, b"b" * 10, commit=S + 1000, flush=False)
    assert node.acc.commit_lsn == S + 10  # the new bytes are not flushed yet


def test_r8_commit_lsn_is_monotonic() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 100, commit=S + 50)
    node.append(1, b"b" * 10, commit=S + 20)
    assert node.acc.commit_lsn == S + 50


def test_commit_floor_is_where_r8_lives() -> None:
    # The simulator's planted bug ``commit_regresses`` overrides exactly this method.
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 100, commit=S + 50)
    assert node.acc._commit_floor() == node.acc.commit_lsn == S + 50


def test_r8_commit_lsn_is_persisted_when_it_crosses_the_term_start() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 100)
    node.elect(2)  # term 2 starts at S+100
    assert node.acc.term_start_lsn == S + 100
    step = node.append(2, b"b" * 10, commit=S + 50)
    assert persists(step) == []
    assert step.reply == AppendResponse(2, S + 110, S)  # the *persisted* commit_lsn
    step = node.append(2, b"", commit=S + 105)
    [state] = persists(step)
    assert state.commit_lsn == S + 105
    assert step.reply == AppendResponse(2, S + 110, S + 105)


def test_r8_commit_lsn_is_persisted_once_it_is_a_segment_ahead() -> None:
    small = ServerInfo(pg_version=160002, system_id=42, wal_seg_size=64)
    node = Node.new(server=small)
    node.elect(1)
    assert persists(node.append(1, b"a" * 63, commit=S + 63)) == []
    [state] = persists(node.append(1, b"b", commit=S + 64))
    assert state.commit_lsn == S + 64


def test_r8_commit_from_peer_info_only_with_an_equal_last_log_term() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 100)
    assert node.acc.last_log_term == 1
    node.peer(PeerUpdate(last_log_term=2, commit_lsn=S + 50))
    assert node.acc.commit_lsn == S
    node.peer(PeerUpdate(last_log_term=0, commit_lsn=S + 50))
    assert node.acc.commit_lsn == S
    node.peer(PeerUpdate(last_log_term=1, commit_lsn=S + 50))
    assert node.acc.commit_lsn == S + 50
    node.peer(PeerUpdate(last_log_term=1, commit_lsn=S + 5000))
    assert node.acc.commit_lsn == S + 100  # never past our flush
    node.peer(PeerUpdate(last_log_term=1, commit_lsn=S + 10))
    assert node.acc.commit_lsn == S + 100  # never back


def test_r8_peer_info_with_last_log_term_zero_never_moves_commit() -> None:
    node = Node.new()
    assert node.acc.last_log_term == 0
    node.peer(PeerUpdate(last_log_term=0, commit_lsn=S + 1))
    assert node.acc.commit_lsn == S


# ---- R9 and FlushWal ---------------------------------------------------------------------------


def test_r9_plain_append_is_flushed_before_its_reply() -> None:
    node = Node.new()
    node.elect(1)
    step = node.append(1, b"w" * 10)
    assert step.effects == (WriteEffect(S, b"w" * 10), FlushEffect())
    assert step.reply == AppendResponse(1, S + 10, S)


def test_r9_no_flush_append_gives_no_reply() -> None:
    node = Node.new()
    node.elect(1)
    step = node.append(1, b"w" * 10, flush=False)
    assert step == Step((WriteEffect(S, b"w" * 10),), None)
    assert node.acc.flush_lsn == S


def test_r9_empty_append_writes_nothing_and_still_replies() -> None:
    node = Node.new()
    node.elect(1)
    step = node.append(1, b"")
    assert step == Step((), AppendResponse(1, S, S))


def test_flush_wal_answers_with_an_append_response() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"w" * 10, flush=False)
    step = node.handle(FlushWal())
    assert step == Step((FlushEffect(),), AppendResponse(1, S + 10, S))
    # Nothing pending: no flush, still an answer.
    assert node.handle(FlushWal()) == Step((), AppendResponse(1, S + 10, S))


# ---- last_log_term switch (Neon's test_last_log_term_switch) ---------------------------------


def test_last_log_term_switches_only_when_flush_reaches_the_terms_start() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 0x10)
    # The term-2 leader started from a node that had term-1 WAL up to S+0x20.
    node.vote(2)
    history = TermHistory.of((0, S), (1, S), (2, S + 0x20))
    node.handle(ProposerElected(2, S + 0x10, history))
    assert node.acc.last_log_term == 1
    node.append(2, b"b" * 0x8)  # still below S+0x20 (catching up on term-1 WAL)
    assert node.acc.last_log_term == 1
    node.append(2, b"b" * 0x7, flush=False)
    node.append(2, b"b" * 0x1, flush=False)  # written up to S+0x20, but not flushed
    assert node.acc.last_log_term == 1
    node.handle(FlushWal())
    assert node.acc.last_log_term == 2


def test_last_log_term_switches_at_once_for_a_node_already_at_the_terms_start() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 0x10)
    node.elect(2)
    assert node.acc.last_log_term == 2


# ---- refusals leave no trace -------------------------------------------------------------------


def _after_vote(node: Node, term: int, msg: ProposerInput) -> ProposerInput:
    node.vote(term)
    return msg


def _refusals() -> list[tuple[str, Callable[[Node], ProposerInput], type[Exception]]]:
    """Ways to get refused by the node of ``_busy_node`` (term 2, commit S+0x30)."""
    ok3 = TermHistory.of((0, S), (1, S), (2, S + 0x40), (3, S + 0x50))
    cuts_committed = TermHistory.of((0, S), (1, S), (3, S + 0x20))
    conflicting = TermHistory.of((0, S), (1, S + 1), (3, S + 0x50))
    return [
        ("R1 greeting", lambda n: Greeting(TenantId(b"\0" * 16), TIMELINE), AcceptorError),
        (
            "R3 empty history",
            lambda n: _after_vote(n, 3, ProposerElected(3, S, TermHistory(()))),
            AcceptorError,
        ),
        (
            "R3 bad start",
            lambda n: _after_vote(n, 3, ProposerElected(3, S + 0x48, ok3)),
            AcceptorError,
        ),
        (
            "R3 conflicting history",
            lambda n: _after_vote(n, 3, ProposerElected(3, S + 0x50, conflicting)),
            CommonPointError,
        ),
        (
            "R4 below commit",
            lambda n: _after_vote(n, 3, ProposerElected(3, S + 0x20, cuts_committed)),
            FatalTimelineError,
        ),
        ("R6 higher term", lambda n: AppendRequest(4, n.acc.write_lsn, S, S, b"x"), AcceptorError),
        ("R10 vote too far", lambda n: VoteRequest(2**64 - 1), AcceptorError),
        (
            "R10 elected too far",
            lambda n: ProposerElected(2 + MAX_TERM_STEP + 1, S + 0x50, ok3),
            AcceptorError,
        ),
        (
            "R6 before elected",
            lambda n: _after_vote(n, 3, AppendRequest(3, n.acc.write_lsn, S, S, b"x")),
            AcceptorError,
        ),
        ("R7 rewrite", lambda n: AppendRequest(2, n.acc.write_lsn - 1, S, S, b"x"), AcceptorError),
        ("R7 gap", lambda n: AppendRequest(2, n.acc.write_lsn + 1, S, S, b"x"), AcceptorError),
    ]


def _busy_node() -> Node:
    """Term 2 leader at S+0x40 after committed term-1 WAL; some WAL not yet flushed."""
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 0x40, commit=S + 0x30)
    node.elect(2)
    node.append(2, b"b" * 0x10, truncate=S + 8, flush=False)
    assert node.acc.commit_lsn == S + 0x30
    assert node.acc.write_lsn == S + 0x50
    return node


@pytest.mark.parametrize(
    ("make", "error"), [(m, e) for _, m, e in _refusals()], ids=[i for i, _, _ in _refusals()]
)
def test_a_refused_message_leaves_the_acceptor_unchanged(
    make: Callable[[Node], ProposerInput], error: type[Exception]
) -> None:
    node = _busy_node()
    msg = make(node)
    before = snapshot(node.acc)
    with pytest.raises(error):
        node.acc.handle(msg)
    assert snapshot(node.acc) == before
    # ... and it still works: a valid message goes through afterwards.
    node.handle(FlushWal())


# ---- peer info and maintenance -----------------------------------------------------------------


def test_peer_horizons_are_raised_in_memory_and_persisted_after_a_segment() -> None:
    node = Node.new()
    step = node.peer(PeerUpdate(0, Lsn(0), backup_lsn=S + 10, peer_horizon_lsn=S + 20))
    assert step == Step()
    assert (node.acc.backup_lsn, node.acc.peer_horizon_lsn) == (S + 10, S + 20)
    step = node.peer(PeerUpdate(0, Lsn(0), remote_consistent_lsn=S + SEG + 1))
    [state] = persists(step)
    assert state.remote_consistent_lsn == S + SEG + 1
    assert state.backup_lsn == S + 10
    node.peer(PeerUpdate(0, Lsn(0), backup_lsn=S))
    assert node.acc.backup_lsn == S + 10  # never back


def test_a_commit_persist_from_peer_info_carries_the_peers_horizons() -> None:
    node = Node.new()
    node.elect(1)
    node.append(1, b"a" * 100)
    node.elect(2)
    node.append(2, b"b" * 10)
    step = node.peer(PeerUpdate(2, S + 105, backup_lsn=S + 100, peer_horizon_lsn=S + 90))
    [state] = persists(step)
    assert state.commit_lsn == S + 105
    assert (state.backup_lsn, state.peer_horizon_lsn) == (S + 100, S + 90)


def test_persist_in_memory_writes_only_when_something_is_ahead() -> None:
    node = Node.new()
    assert node.apply(node.acc.persist_in_memory()) == Step()
    node.elect(1)
    node.append(1, b"a" * 10, commit=S + 10, truncate=S + 5)
    [state] = persists(node.apply(node.acc.persist_in_memory()))
    assert (state.commit_lsn, state.peer_horizon_lsn) == (S + 10, S + 5)
    assert node.apply(node.acc.persist_in_memory()) == Step()


def test_bump_term_raises_and_persists_the_term() -> None:
    node = Node.new()
    [state] = persists(node.apply(node.acc.bump_term()))
    assert state.term == node.acc.term == 1
    [state] = persists(node.apply(node.acc.bump_term(7)))
    assert state.term == 7
    assert node.apply(node.acc.bump_term(3)) == Step()
    assert node.acc.term == 7


# ---- R10: the term space must last ------------------------------------------------------------


def test_r10_vote_for_the_largest_term_is_refused_so_later_leaders_still_have_terms() -> None:
    node = Node.new()
    with pytest.raises(AcceptorError, match="R10"):
        node.handle(VoteRequest(MAX_TERM))
    assert node.acc.term == 0
    assert node.vote(1).vote_given  # the timeline still elects


def test_r10_a_term_may_rise_by_exactly_the_step_and_not_one_more() -> None:
    node = Node.new()
    node.elect(5)
    with pytest.raises(AcceptorError, match="R10"):
        node.handle(VoteRequest(5 + MAX_TERM_STEP + 1))
    assert node.vote(5 + MAX_TERM_STEP).vote_given


def test_r10_proposer_elected_far_above_our_term_is_refused() -> None:
    node = Node.new()
    far = MAX_TERM_STEP + 1
    with pytest.raises(AcceptorError, match="R10"):
        node.handle(ProposerElected(far, S, TermHistory.of((0, S), (far, S))))
    assert node.acc.term == 0


def test_r10_bump_term_refuses_to_pass_the_largest_term_or_jump_too_far() -> None:
    node = Node.new()
    with pytest.raises(AcceptorError, match="R10"):
        node.acc.bump_term(MAX_TERM)
    state = attrs.evolve(node.acc.persisted, term=MAX_TERM)
    top = Acceptor(NodeId(1), state, write_lsn=S, flush_lsn=S)
    with pytest.raises(AcceptorError, match="R10: term bump to 18446744073709551616 is beyond"):
        top.bump_term()
    assert top.term == MAX_TERM
    assert top.bump_term(MAX_TERM) == Step()  # not a rise: nothing to refuse


def test_acceptor_refuses_inconsistent_start_positions() -> None:
    state = PersistentState.new_timeline(TENANT, TIMELINE, S, SERVER)
    with pytest.raises(ValueError, match="beyond write_lsn"):
        Acceptor(NodeId(1), state, write_lsn=S, flush_lsn=S + 1)
    with pytest.raises(ValueError, match="R8: persisted commit_lsn"):
        Acceptor(NodeId(1), attrs.evolve(state, commit_lsn=S + 5), write_lsn=S, flush_lsn=S)


def test_fresh_storage_before_the_timeline_start_reports_the_timeline_start() -> None:
    state = PersistentState.new_timeline(TENANT, TIMELINE, S, SERVER)
    acc = Acceptor(NodeId(1), state, write_lsn=Lsn(0), flush_lsn=Lsn(0))
    assert acc.flush_lsn == S
    reply = acc.handle(VoteRequest(1)).reply
    assert isinstance(reply, VoteResponse)
    assert reply.flush_lsn == S
    assert reply.term_history == TermHistory.of((0, S))


# ---- property: random proposer sessions over three acceptors -----------------------------------


@attrs.define
class Proposer:
    term: int
    history: TermHistory
    base: Lsn
    wal: bytearray
    next_lsn: dict[int, Lsn]
    """Per member: where the next append starts (members that rejected us are removed)."""
    acks: dict[int, Lsn] = attrs.field(factory=dict)
    commit: Lsn = INVALID_LSN

    @property
    def term_start(self) -> Lsn:
        return self.history[-1].lsn

    @property
    def end(self) -> Lsn:
        return self.base + len(self.wal)


def _elect(nodes: list[Node], quorum: list[int], term: int) -> Proposer:
    votes = {i: nodes[i].vote(term) for i in quorum}
    assert all(v.vote_given for v in votes.values())
    donor = max(
        quorum,
        key=lambda i: (votes[i].term_history[-1].term, votes[i].flush_lsn),
    )
    start = votes[donor].flush_lsn
    history = votes[donor].term_history.extended(TermLsn(term, start))
    wal = bytearray(nodes[donor].wal[: start - S])
    proposer = Proposer(term, history, S, wal, {})
    for i in quorum:
        at = start_point(history, votes[i])
        step = nodes[i].handle(ProposerElected(term, at, history))
        if any(isinstance(e, TruncateEffect) and e.lsn < votes[i].flush_lsn for e in step.effects):
            event("an election cut a diverged tail")
        proposer.next_lsn[i] = at
    return proposer


def _send(proposer: Proposer, i: int, node: Node, *, flush: bool, chunk: int) -> None:
    begin = proposer.next_lsn[i]
    data = bytes(proposer.wal[begin - S : begin - S + chunk])
    msg = AppendRequest(proposer.term, begin, proposer.commit, Lsn(0), data)
    reply = node.handle(msg, flush=flush).reply
    if isinstance(reply, AppendResponse) and reply.term > proposer.term:
        event("a deposed leader got a term-only response")
        del proposer.next_lsn[i]  # a newer leader exists for this member
        return
    proposer.next_lsn[i] = begin + len(data)
    if reply is not None:
        assert isinstance(reply, AppendResponse)
        assert reply.term == proposer.term
        proposer.acks[i] = reply.flush_lsn
    # Commit: the second-highest ack of three, counting acks below our term start as 0.
    acked = sorted(
        (a if a >= proposer.term_start else Lsn(0) for a in proposer.acks.values()),
        reverse=True,
    )
    if len(acked) >= 2:
        proposer.commit = max(proposer.commit, acked[1])


OPS = ["elect", "write", "write", "send", "send", "broadcast", "broadcast", "flush", "peer"]
OPS += ["crash"]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_random_proposer_sessions_keep_commit_below_flush_and_terms_rising(
    data: st.DataObject,
) -> None:
    nodes = [Node.new(i + 1) for i in range(3)]
    proposers: list[Proposer] = []
    counter = itertools.count()
    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        terms_before = [n.acc.term for n in nodes]
        commits_before = [n.acc.commit_lsn for n in nodes]
        restarted: int | None = None
        op = data.draw(st.sampled_from(OPS), label="op")
        if op == "elect" or not proposers:
            quorum = data.draw(
                st.sampled_from([[0, 1], [0, 2], [1, 2], [0, 1, 2]]), label="quorum"
            )
            term = max(n.acc.term for n in nodes) + data.draw(st.integers(1, 3), label="bump")
            proposers.append(_elect(nodes, quorum, term))
        elif op == "write":
            p = data.draw(st.sampled_from(proposers), label="proposer")
            tag = next(counter).to_bytes(4, "big")
            p.wal += tag * data.draw(st.integers(1, 8), label="words")
        elif op == "send":
            p = data.draw(st.sampled_from(proposers), label="proposer")
            if p.next_lsn:
                i = data.draw(st.sampled_from(sorted(p.next_lsn)), label="member")
                _send(
                    p,
                    i,
                    nodes[i],
                    flush=data.draw(st.booleans(), label="flush"),
                    chunk=data.draw(st.integers(0, 40), label="chunk"),
                )
        elif op == "broadcast":
            p = data.draw(st.sampled_from(proposers), label="proposer")
            for i in sorted(p.next_lsn):
                _send(p, i, nodes[i], flush=True, chunk=len(p.wal))
        elif op == "flush":
            nodes[data.draw(st.integers(0, 2), label="node")].handle(FlushWal())
        elif op == "peer":
            i, j = data.draw(st.permutations([0, 1, 2]), label="pair")[:2]
            nodes[i].peer(PeerUpdate(nodes[j].acc.last_log_term, nodes[j].acc.commit_lsn))
        else:
            restarted = data.draw(st.integers(0, 2), label="node")
            nodes[restarted].restart()
            for p in proposers:  # its connections drop
                p.next_lsn.pop(restarted, None)
                p.acks.pop(restarted, None)

        for k, node in enumerate(nodes):
            acc = node.acc
            assert acc.commit_lsn <= acc.flush_lsn
            assert acc.term >= terms_before[k], "term went back"
            assert acc.last_log_term <= acc.term
            if k != restarted:
                assert acc.commit_lsn >= commits_before[k], "commit_lsn went back"
        if max(n.acc.commit_lsn for n in nodes) > S:
            event("something was committed")
        # Log safety: any two nodes agree on WAL below both their commit_lsns.
        for a, b in itertools.combinations(nodes, 2):
            upto = min(a.acc.commit_lsn, b.acc.commit_lsn) - S
            assert a.wal[:upto] == b.wal[:upto]
