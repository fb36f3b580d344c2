"""The invariants (reference §10), checked after every trio task step.

Rules
-----
I1  At most one proposer is elected per term.
I2  A node's term never decreases (across crashes too: a term is durable before it is
    acknowledged).
I3  commit_lsn never decreases within one incarnation of a node and is never above its
    flush_lsn.
I4  WAL a node once counted as committed is never truncated: its flush_lsn (and its store's
    write position) never drops below the highest commit_lsn it ever had; and the terms
    that wrote the committed prefix agree on every node (committed WAL never changes).
I5  Log matching: each node's durable WAL is byte-equal to what its term history says: the
    range ``[l_i, l_i+1)`` of history entry ``(t_i, l_i)`` holds exactly the bytes the
    elected proposer of ``t_i`` generated from its term start ``l_i``. Recovery writes only
    through the acceptor, so a recovered byte its donor's term did not write breaks I5 too
    (reported as a recovery fault when a recovery session is open on the node).
"""

from __future__ import annotations

import attrs
import trio

from ..core import Lsn, TermHistory
from ..proposer import WalGenerator
from ..storage import WalStore
from ._cluster import Leader, SimNode, World

__all__ = ["INVARIANTS", "InvariantChecker", "Violation"]

INVARIANTS = (
    "one_leader_per_term",
    "terms_never_decrease",
    "commit_monotonic_and_flushed",
    "committed_never_truncated",
    "log_matching",
)


@attrs.frozen
class Violation:
    invariant: str
    message: str
    at: float


@attrs.define
class _NodeMemory:
    max_term: int = 0
    max_commit: int = 0
    timeline: object = None
    commit: int = 0
    store_write: int = 0
    verified_key: object = None
    verified_upto: int = 0


class InvariantChecker(trio.abc.Instrument):
    """A trio instrument: after every task step, check I1-I4 (cheap) and, when a node's
    timeline is not mid-update, I5 on the WAL that is new since the last check."""

    def __init__(self, world: World, *, disabled: frozenset[str] = frozenset()) -> None:
        self.world = world
        self.disabled = disabled
        self.violation: Violation | None = None
        self.steps = 0
        self._mem = {n: _NodeMemory() for n in world.nodes}
        self._gens: dict[int, WalGenerator] = {}
        self._committed_terms: list[tuple[int, int]] = []
        self._committed_end = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        if self.violation is None:
            self.check()

    def _fail(self, invariant: str, message: str) -> None:
        if invariant in self.disabled or self.violation is not None:
            return
        self.violation = Violation(invariant, message, trio.current_time())

    def check(self, *, full: bool = False) -> None:
        if self.world.election_conflicts:
            self._fail("one_leader_per_term", self.world.election_conflicts[0])
        for node in self.world.nodes.values():
            self._check_node(node, full=full)

    def _check_node(self, node: SimNode, *, full: bool) -> None:
        tl = node.timeline
        if tl is None:
            return
        mem = self._mem[node.id]
        a = tl.acceptor
        n = node.id
        term, commit, flush = int(a.term), int(a.commit_lsn), int(a.flush_lsn)
        if term < mem.max_term:
            self._fail("terms_never_decrease", f"node {n}: term {term} < {mem.max_term} before")
        mem.max_term = max(mem.max_term, term)
        if mem.timeline is not tl:  # a restart: a new incarnation of the node's timeline
            mem.timeline, mem.commit, mem.verified_key = tl, 0, None
            mem.store_write = int(tl.store.store.write_lsn)
        if commit < mem.commit:
            self._fail("commit_monotonic_and_flushed",
                       f"node {n}: commit_lsn went back {Lsn(mem.commit)} -> {Lsn(commit)}")
        if commit > flush:
            self._fail("commit_monotonic_and_flushed",
                       f"node {n}: commit_lsn {Lsn(commit)} > flush_lsn {Lsn(flush)}")
        mem.commit = max(mem.commit, commit)
        store: WalStore = tl.store.store
        store_write = int(store.write_lsn)
        if store_write < mem.store_write:
            mem.verified_upto = min(mem.verified_upto, store_write)
        mem.store_write = store_write
        if flush < mem.max_commit or store_write < mem.max_commit:
            self._fail("committed_never_truncated",
                       f"node {n}: WAL cut to flush={Lsn(flush)} write={Lsn(store_write)} "
                       f"below its commit_lsn {Lsn(mem.max_commit)}")
        mem.max_commit = max(mem.max_commit, commit)
        if tl.lock.locked() and not full:
            return  # mid-update: history and store may disagree until the effects are done
        history = a.term_history
        self._check_committed_terms(n, history, commit)
        key = (id(tl), history)
        store_flush = int(store.flush_lsn)
        if key != mem.verified_key or full:
            mem.verified_key, mem.verified_upto = key, int(history[0].lsn)
        if store_flush > mem.verified_upto:
            recovering = any(r.kind == "recovery" for r in tl.receivers.values())
            self._check_log_matching(n, store, history, mem.verified_upto, store_flush,
                                     recovering)
            mem.verified_upto = store_flush

    def _check_committed_terms(self, n: int, history: TermHistory, commit: int) -> None:
        mine = _terms_below(history, commit)
        upto = min(commit, self._committed_end)
        if _terms_below_list(mine, upto) != _terms_below_list(self._committed_terms, upto):
            self._fail("committed_never_truncated",
                       f"node {n}: committed WAL below {Lsn(upto)} was written by terms "
                       f"{_terms_below_list(mine, upto)}, elsewhere by "
                       f"{_terms_below_list(self._committed_terms, upto)}")
        elif commit > self._committed_end:
            self._committed_terms, self._committed_end = mine, commit

    def _check_log_matching(
        self, n: int, store: WalStore, history: TermHistory, lo: int, hi: int, recovering: bool
    ) -> None:
        entries = list(history)
        for i, entry in enumerate(entries):
            seg_lo = max(lo, int(entry.lsn))
            seg_hi = min(hi, int(entries[i + 1].lsn) if i + 1 < len(entries) else hi)
            if seg_lo >= seg_hi:
                continue
            who = "recovery" if recovering else "node"
            leader = self.world.leaders.get(int(entry.term))
            if leader is None:
                self._fail("log_matching", f"node {n}: WAL {Lsn(seg_lo)}..{Lsn(seg_hi)} is "
                           f"labelled term {entry.term}, which elected no proposer ({who})")
                return
            if int(leader.start_lsn) != int(entry.lsn):
                self._fail("log_matching", f"node {n}: term {entry.term} starts at {entry.lsn} "
                           f"in its history, its proposer started at {leader.start_lsn}")
                return
            bad = self._first_mismatch(store, leader, seg_lo, seg_hi)
            if bad is not None:
                self._fail("log_matching", f"node {n}: byte at {Lsn(bad)} differs from what "
                           f"term {entry.term}'s proposer wrote ({who} wrote it; history "
                           f"{[(int(e.term), str(e.lsn)) for e in entries]})")
                return

    def _first_mismatch(self, store: WalStore, leader: Leader, lo: int, hi: int) -> int | None:
        gen = self._gens.get(leader.proposer)
        if gen is None:
            gen = self._gens[leader.proposer] = WalGenerator(leader.seed, leader.total_bytes)
        base = int(leader.start_lsn)
        pos = lo
        while pos < hi:
            got = store.read(Lsn(pos), hi - pos)
            if not got:
                return pos
            if pos - base + len(got) > leader.total_bytes:
                return max(pos, base + leader.total_bytes)
            want = gen.read(pos - base, len(got))
            if got != want:
                return pos + next(i for i, (x, y) in enumerate(zip(got, want, strict=True))
                                  if x != y)
            pos += len(got)
        return None


def _terms_below(history: TermHistory, end: int) -> list[tuple[int, int]]:
    return [(int(e.term), int(e.lsn)) for e in history if int(e.lsn) < end]


def _terms_below_list(entries: list[tuple[int, int]], end: int) -> list[tuple[int, int]]:
    # Term 0 writes nothing, and an entry whose range is empty says nothing.
    out = []
    for i, (t, lsn) in enumerate(entries):
        nxt = entries[i + 1][1] if i + 1 < len(entries) else end
        if lsn < end and t != 0 and nxt > lsn:
            out.append((t, lsn))
    return out
