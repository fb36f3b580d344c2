"""The checker: what a healed run must satisfy. Pure: evidence in, violations out.

Rules
-----
C-a  Every LSN a proposer saw committed (the largest commit any summary line printed or any
     node reported) is on a quorum with the bytes the generator makes for that seed: the
     digest of ``[timeline start, committed)`` on at least a quorum of nodes equals the
     digest of the expected WAL, built term by term from the term history.
C-b  All nodes converge to identical WAL (same flush LSN, same digest) within the bound.
C-c  No term had two leaders: every (term, start LSN) seen in any node's term history and
     any proposer's summary agrees on one start LSN per term.
C-d  ``verify`` passes on every node (pg WAL only; random WAL has no records to check, and
     C-a already compares its every byte).
C-e  No process crashed: no traceback in any log, every node exited 0 on SIGTERM, and no
     node holds more file descriptors after the run than at its quiet start (plus slack).
C-l  Liveness: after healing, a proposer run completes.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final, final

import attrs

from ..core import Lsn, TermHistory, TermLsn

if TYPE_CHECKING:
    from ..proposer import WalSource

__all__ = ["FD_SLACK", "Evidence", "NodeEnd", "Violation", "check", "expected_digest"]

FD_SLACK: Final = 8
"""Descriptors a quiet node may hold beyond its quiet start: a peer's keep-alive
connection that the partition left half-open and the idle timeout has not closed yet."""

SourceFor = Callable[[Lsn, TermHistory], "WalSource"]
"""The WAL one proposer run writes, given its term's start and the history (for pg WAL's
continuation); offsets are from the term start."""


@final
@attrs.frozen
class Violation:
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"


@final
@attrs.frozen
class NodeEnd:
    """One node after healing."""

    node_id: int
    flush_lsn: Lsn
    term_history: TermHistory
    committed_digest: str | None
    """Digest of ``[timeline start, committed)``; None if the node holds less."""
    verify_rc: int | None = None
    """``verify``'s exit status (None: not run)."""
    fds_start: int = 0
    fds_end: int = 0
    exit_code: int | None = 0
    tracebacks: int = 0


@final
@attrs.frozen
class Evidence:
    """What the campaign observed; ``histories`` holds every (term, start) ever seen, with
    where it was seen."""

    nodes: tuple[NodeEnd, ...]
    committed: Lsn
    expected_digest: str
    histories: tuple[tuple[str, TermLsn], ...]
    converged_after: float | None
    convergence_bound: float
    liveness_rc: int
    proposer_tracebacks: int = 0


def expected_digest(
    history: TermHistory, until: Lsn, source_for: SourceFor, chunk: int = 1 << 20
) -> str:
    """SHA-256 of the WAL the proposers wrote in ``[history start, until)``: each term's
    bytes come from its own run's source, from its start to the next term's start."""
    sha = hashlib.sha256()
    entries = list(history)
    for i, entry in enumerate(entries):
        end = min(int(until), int(entries[i + 1].lsn) if i + 1 < len(entries) else int(until))
        if end <= entry.lsn:
            continue
        source = source_for(entry.lsn, history)
        for lsn in range(int(entry.lsn), end, chunk):
            n = min(chunk, end - lsn)
            sha.update(source.read(lsn - int(entry.lsn), n))
    return sha.hexdigest()


def check(ev: Evidence) -> tuple[Violation, ...]:
    """Every rule C-a .. C-l that ``ev`` breaks, one violation each (empty: a clean run)."""
    out: list[Violation] = []
    quorum = len(ev.nodes) // 2 + 1
    good = [n.node_id for n in ev.nodes if n.committed_digest == ev.expected_digest]
    if len(good) < quorum:
        out.append(Violation("C-a", f"committed WAL up to {ev.committed} has the generator's "
                             f"bytes on nodes {good} only, not on a quorum of {quorum}"))
    out.extend(_convergence(ev))
    out.extend(_one_leader_per_term(ev.histories))
    bad_verify = [n.node_id for n in ev.nodes if n.verify_rc not in (None, 0)]
    if bad_verify:
        out.append(Violation("C-d", f"verify failed on nodes {bad_verify}"))
    out.extend(_processes(ev))
    if ev.liveness_rc != 0:
        out.append(Violation("C-l", f"the proposer run after healing exited {ev.liveness_rc}"))
    return tuple(out)


def _convergence(ev: Evidence) -> Iterable[Violation]:
    if ev.converged_after is None:
        flushes = {n.node_id: str(n.flush_lsn) for n in ev.nodes}
        yield Violation("C-b", f"nodes did not converge within {ev.convergence_bound}s "
                        f"(flush {flushes})")


def _one_leader_per_term(seen: Iterable[tuple[str, TermLsn]]) -> Iterable[Violation]:
    starts: dict[int, dict[Lsn, list[str]]] = defaultdict(lambda: defaultdict(list))
    for where, entry in seen:
        if where not in starts[entry.term][entry.lsn]:
            starts[entry.term][entry.lsn].append(where)
    for term, by_start in sorted(starts.items()):
        if len(by_start) > 1:
            detail = "; ".join(f"{lsn} at {', '.join(w)}" for lsn, w in by_start.items())
            yield Violation("C-c", f"term {term} had two leaders: {detail}")


def _processes(ev: Evidence) -> Iterable[Violation]:
    crashed: Mapping[int, str] = {
        n.node_id: f"exit {n.exit_code}, {n.tracebacks} tracebacks"
        for n in ev.nodes if n.exit_code != 0 or n.tracebacks
    }
    if crashed or ev.proposer_tracebacks:
        yield Violation("C-e", f"crashed: nodes {dict(crashed)}, "
                        f"proposer tracebacks {ev.proposer_tracebacks}")
    leaked = {n.node_id: f"{n.fds_start}->{n.fds_end}"
              for n in ev.nodes if n.fds_end > n.fds_start + FD_SLACK}
    if leaked:
        yield Violation("C-e", f"file descriptors leaked (quiet start->end): {leaked}")
