"""The invariants (reference §10), checked after every trio task step.

Rules
-----
I1  At most one proposer is elected per term.
I2  A node's term never decreases (across crashes too: a term is durable before it is
    acknowledged).
I3  commit_lsn never decreases within one incarnation of a node and is never above its
    flush_lsn.
I4  Committed WAL is never truncated or changed on any node of the committing quorum: a
    node's flush_lsn (and its store's write position) never drops below the highest
    commit_lsn it ever had, nor below the point up to which it ever held the cluster's
    committed prefix (same terms as the node with the highest commit_lsn: a quorum member
    that has not learned commit_lsn yet is protected too); and the terms that wrote the
    committed prefix agree on every node (committed WAL never changes).
I5  Log matching: each node's durable WAL is byte-equal to what its term history says: the
    range ``[l_i, l_i+1)`` of history entry ``(t_i, l_i)`` holds exactly the bytes the
    elected proposer of ``t_i`` generated from its term start ``l_i``. Recovery writes only
    through the acceptor, so a recovered byte its donor's term did not write breaks I5 too
    (reported as a recovery fault when a recovery session is open on the node).
I6  A proposer stopped by a newer term (``NewerTermError``) was stopped for a reason: another
    proposer asked for votes in that term or a higher one, or a term bump made one.
I7  Liveness: in the live phase (no faults, a quorum up, one proposer) the proposer is
    never stopped and commits all its WAL within the bound; and every run converges.
I8  Recovery never disturbs a proposer: no proposer gets a refusal (a vote refused, an
    append or ProposerElected refused) from a node whose recovery wrote to it after that
    proposer's greeting was answered.
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
    "convergence",
    "proposer_stop_explained",
    "proposer_liveness",
    "no_recovery_interference",
)
"""Every check a run can fail (``convergence`` is checked at the end of the run, and again
after the live phase); any of them can be switched off with
``SimConfig(disabled_invariants=...)``."""


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
    verified_key: tuple[object, TermHistory] | None = None
    committed_key: object = None
    verified_upto: int = 0
    held_committed: int = 0
    """The node's WAL below this was committed WAL when it held it (never to be cut)."""
    seen: tuple[object, ...] = ()
    """Everything the checks of this node read, as of the last check: unchanged → skip."""


class InvariantChecker(trio.abc.Instrument):
    """A trio instrument: after every task step, check I1-I4 (cheap) and, when a node's
    timeline is not mid-update, I5 on the WAL that is new since the last check."""

    def __init__(self, world: World, *, disabled: frozenset[str] = frozenset()) -> None:
        unknown = disabled - set(INVARIANTS)
        if unknown:
            raise ValueError(f"unknown invariants {sorted(unknown)}; known: {INVARIANTS}")
        self.world = world
        self.disabled = disabled
        self.violation: Violation | None = None
        self.steps = 0
        self._mem = {n: _NodeMemory() for n in world.nodes}
        self._wal: dict[int, bytes] = {}
        self._committed_terms: list[tuple[int, int]] = []
        self._committed_end = 0
        self._committed_version = 0
        self.stopped = trio.Event()
        """Set at the first violation (the run's watcher ends the run)."""

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        if self.violation is None:
            self.check()

    def fail(self, invariant: str, message: str) -> None:
        if invariant in self.disabled or self.violation is not None:
            return
        self.violation = Violation(invariant, message, trio.current_time())
        self.stopped.set()

    def check(self, *, full: bool = False) -> None:
        w = self.world
        if w.election_conflicts:
            self.fail("one_leader_per_term", w.election_conflicts[0])
        if w.unexplained_stops:
            self.fail("proposer_stop_explained", w.unexplained_stops[0])
        if w.interference:
            self.fail("no_recovery_interference", w.interference[0])
        if w.liveness_failures:
            self.fail("proposer_liveness", w.liveness_failures[0])
        for node in self.world.nodes.values():
            self._check_node(node, full=full)

    def _check_node(self, node: SimNode, *, full: bool) -> None:
        tl = node.timeline
        if tl is None:
            return
        mem = self._mem[node.id]
        a = tl.acceptor
        store: WalStore = tl.store.store
        # Most steps change nothing on most nodes: every check below is a function of these
        # values (and of the cluster-wide committed prefix), so an unchanged tuple skips them.
        seen = (tl, a.persisted, a.commit_lsn, a.flush_lsn, store.write_lsn, store.flush_lsn,
                tl.lock.locked(), self._committed_version)
        if seen == mem.seen and not full:
            return
        mem.seen = seen
        n = node.id
        term, commit, flush = int(a.term), int(a.commit_lsn), int(a.flush_lsn)
        if term < mem.max_term:
            self.fail("terms_never_decrease", f"node {n}: term {term} < {mem.max_term} before")
        mem.max_term = max(mem.max_term, term)
        if mem.timeline is not tl:  # a restart: a new incarnation of the node's timeline
            mem.timeline, mem.commit, mem.verified_key = tl, 0, None
            mem.store_write = int(tl.store.store.write_lsn)
        store_write = int(store.write_lsn)
        if store_write < mem.store_write:
            mem.verified_upto = min(mem.verified_upto, store_write)
        mem.store_write = store_write
        # I4 before I3: a truncation below commit_lsn also leaves commit_lsn above flush_lsn,
        # and the truncation is the news.
        if flush < mem.max_commit or store_write < mem.max_commit:
            self.fail("committed_never_truncated",
                      f"node {n}: WAL cut to flush={Lsn(flush)} write={Lsn(store_write)} "
                      f"below its commit_lsn {Lsn(mem.max_commit)}")
        if flush < mem.held_committed or store_write < mem.held_committed:
            self.fail("committed_never_truncated",
                      f"node {n}: WAL cut to flush={Lsn(flush)} write={Lsn(store_write)} "
                      f"below {Lsn(mem.held_committed)}, up to which it held committed WAL "
                      "(it was part of the committing quorum)")
        mem.max_commit = max(mem.max_commit, commit)
        if commit < mem.commit:
            self.fail("commit_monotonic_and_flushed",
                      f"node {n}: commit_lsn went back {Lsn(mem.commit)} -> {Lsn(commit)}")
        if commit > flush:
            self.fail("commit_monotonic_and_flushed",
                      f"node {n}: commit_lsn {Lsn(commit)} > flush_lsn {Lsn(flush)}")
        mem.commit = max(mem.commit, commit)
        if tl.lock.locked() and not full:
            return  # mid-update: history and store may disagree until the effects are done
        history = a.term_history
        if (history, commit, self._committed_version) != mem.committed_key:
            self._check_committed_terms(n, history, commit)
            mem.committed_key = (history, commit, self._committed_version)
        held = min(flush, self._committed_end)
        if held > mem.held_committed and _terms_below_list(
            _terms_below(history, held), held
        ) == _terms_below_list(self._committed_terms, held):
            # This node holds the committed WAL up to ``held`` (same terms → same bytes, by
            # I5), whether or not it has learned commit_lsn: no leader may cut it any more.
            mem.held_committed = held
        store_flush = int(store.flush_lsn)
        if full or mem.verified_key is None or mem.verified_key[0] is not tl:
            mem.verified_upto = int(history[0].lsn)
        elif mem.verified_key[1] != history:
            # Bytes below the point where the old and the new history start to label WAL
            # differently were checked against the same terms already (truncations lower
            # ``verified_upto`` above); only the rest needs checking again.
            mem.verified_upto = min(mem.verified_upto, _labels_agree_below(
                mem.verified_key[1], history))
        mem.verified_key = (tl, history)
        if store_flush > mem.verified_upto:
            recovering = any(r.kind == "recovery" for r in tl.receivers.values())
            self._check_log_matching(n, store, history, mem.verified_upto, store_flush,
                                     recovering)
            mem.verified_upto = store_flush

    def _check_committed_terms(self, n: int, history: TermHistory, commit: int) -> None:
        mine = _terms_below(history, commit)
        upto = min(commit, self._committed_end)
        if _terms_below_list(mine, upto) != _terms_below_list(self._committed_terms, upto):
            self.fail("committed_never_truncated",
                       f"node {n}: committed WAL below {Lsn(upto)} was written by terms "
                       f"{_terms_below_list(mine, upto)}, elsewhere by "
                       f"{_terms_below_list(self._committed_terms, upto)}")
        elif commit > self._committed_end:
            self._committed_terms, self._committed_end = mine, commit
            self._committed_version += 1

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
                self.fail("log_matching", f"node {n}: WAL {Lsn(seg_lo)}..{Lsn(seg_hi)} is "
                           f"labelled term {entry.term}, which elected no proposer ({who})")
                return
            if int(leader.start_lsn) != int(entry.lsn):
                self.fail("log_matching", f"node {n}: term {entry.term} starts at {entry.lsn} "
                           f"in its history, its proposer started at {leader.start_lsn}")
                return
            bad = self._first_mismatch(store, leader, seg_lo, seg_hi)
            if bad is not None:
                self.fail("log_matching", f"node {n}: byte at {Lsn(bad)} differs from what "
                           f"term {entry.term}'s proposer wrote ({who} wrote it; history "
                           f"{[(int(e.term), str(e.lsn)) for e in entries]})")
                return

    def _first_mismatch(self, store: WalStore, leader: Leader, lo: int, hi: int) -> int | None:
        wal = self._wal.get(leader.proposer)
        if wal is None:
            gen = WalGenerator(leader.seed, leader.total_bytes)
            wal = self._wal[leader.proposer] = gen.read(0, leader.total_bytes)
        base = int(leader.start_lsn)
        pos = lo
        while pos < hi:
            got = store.read(Lsn(pos), hi - pos)
            if not got:
                return pos
            if pos - base + len(got) > leader.total_bytes:
                return max(pos, base + leader.total_bytes)
            want = wal[pos - base : pos - base + len(got)]
            if got != want:
                return pos + next(i for i, (x, y) in enumerate(zip(got, want, strict=True))
                                  if x != y)
            pos += len(got)
        return None


def _labels_agree_below(old: TermHistory, new: TermHistory) -> int:
    """The LSN below which ``old`` and ``new`` name the same term for every byte."""
    for i, (a, b) in enumerate(zip(old, new, strict=False)):
        if a != b:
            return min(int(a.lsn), int(b.lsn)) if i else 0
    if len(old) == len(new):
        return 1 << 64
    return int((old if len(old) > len(new) else new)[min(len(old), len(new))].lsn)


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
