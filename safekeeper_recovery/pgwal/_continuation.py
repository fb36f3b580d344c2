"""Synthetic WAL that continues a timeline's earlier runs, wherever they were cut.

A proposer that dies mid-run leaves the quorum's WAL ending wherever its last append
ended, usually inside a record. The next proposer must write from exactly there (it cannot
rewrite what the quorum holds), and what it writes must make the whole stream valid WAL,
as the fault campaign checks with ``verify`` (finding F1 in docs/faults.md).

Rules
-----
C1  Runs written this way end at a multiple of ``CLEAN_STEP`` (64 KiB) at or after
    ``start + size``, and every multiple of it inside them is a clean point (rule S5 of
    :class:`SyntheticWal`): a trailer record ends there. So ``--bytes 4MiB`` from a
    segment start writes exactly 4 MiB, and a run that starts at a multiple of
    ``CLEAN_STEP`` chains ``xl_prev`` to the trailer 24 bytes before it, whoever wrote
    that (any seed, any size).
C2  A run that starts anywhere else starts where an earlier run was cut, inside a record
    or a page header. It first writes the rest of that record as the earlier run would
    have (regenerated from the term history: the earlier run began at the last term start
    before ours, and, by S5, its bytes up to any clean point do not depend on its size),
    then a :class:`SyntheticWal` from the end of that record, chained to it. This needs
    the earlier run to have had the same seed, segment size and system id; WAL from
    another seed cut mid-record cannot be continued validly (no one can know its missing
    bytes), and this code cannot tell.
C3  A run at the timeline's start chains to nothing (``xl_prev`` 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, final

from ..core import Lsn
from ._synthetic import TRAILER_SIZE, SyntheticWal

__all__ = ["CLEAN_STEP", "ContinuedWal", "continue_synthetic"]

CLEAN_STEP: Final = 64 * 1024


@final
class ContinuedWal:
    """``completion`` (the rest of a record an earlier run left cut at ``start_lsn``)
    followed by ``body`` (rule C2). Reads like :class:`SyntheticWal`."""

    def __init__(self, start_lsn: Lsn, completion: bytes, completed_lsn: Lsn,
                 body: SyntheticWal) -> None:
        assert start_lsn + len(completion) == body.start_lsn
        self.start_lsn = start_lsn
        self.completion = completion
        self.completed_lsn = completed_lsn
        """Start of the record the completion finishes (``xl_prev`` of ``body``'s first)."""
        self.body = body
        self.end_lsn = body.end_lsn
        self.size = int(body.end_lsn) - int(start_lsn)

    def __repr__(self) -> str:
        return f"ContinuedWal({self.start_lsn}, {len(self.completion)} bytes, {self.body!r})"

    def read(self, offset: int, length: int) -> bytes:
        """Bytes ``start_lsn + offset ..`` of the run; ``ValueError`` outside it."""
        offset, length = int(offset), int(length)  # callers may pass Lsn differences
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(
                f"read of {length} bytes at {offset} outside the stream of {self.size} bytes"
            )
        head = self.completion[offset : offset + length]
        rest = length - len(head)
        if not rest:
            return head
        return head + self.body.read(max(0, offset - len(self.completion)), rest)

    def record_boundary(self, lsn: Lsn) -> tuple[Lsn, Lsn]:
        """As :meth:`SyntheticWal.record_boundary`."""
        if lsn <= self.body.start_lsn:
            return self.body.start_lsn, self.completed_lsn
        return self.body.record_boundary(lsn)


def _clean_end(start: int, size: int) -> int:
    """C1: the run's end, the first multiple of ``CLEAN_STEP`` at or after ``start + size``
    (0 bytes stay 0)."""
    if size <= 0:
        return start
    return -(-(start + size) // CLEAN_STEP) * CLEAN_STEP


def continue_synthetic(
    seed: int,
    size: int,
    start_lsn: Lsn,
    term_starts: Sequence[Lsn],
    *,
    seg_size: int,
    system_id: int,
) -> SyntheticWal | ContinuedWal:
    """The WAL a run of about ``size`` bytes writes from ``start_lsn`` (rules C1-C3), given
    where each earlier term of the timeline started (``term_starts``, the timeline's start
    first, in order; later entries are ignored). ``ValueError`` if it cannot be written."""
    timeline_start = term_starts[0] if term_starts else start_lsn

    def fresh(start: Lsn, end: int, prev: Lsn) -> SyntheticWal:
        return SyntheticWal(seed, start, max(0, end - start), seg_size=seg_size,
                            system_id=system_id, prev_lsn=prev, clean_step=CLEAN_STEP)

    def run(start: Lsn, end: int) -> SyntheticWal | ContinuedWal:
        if start <= timeline_start:
            return fresh(start, end, Lsn(0))
        if start % CLEAN_STEP == 0:
            return fresh(start, end, Lsn(start - TRAILER_SIZE))
        earlier = [lsn for lsn in term_starts if lsn < start]
        if not earlier:
            raise ValueError(f"no term started before {start} to continue")
        # Regenerate the earlier run up to a clean point after ``start``: the record cut at
        # ``start`` ends there at the latest, and up to there the earlier run's bytes do
        # not depend on its size (S5). One step more, in case the first is skipped (S5).
        before = run(earlier[-1], _clean_end(start, 1) + CLEAN_STEP)
        at, prev = before.record_boundary(start)
        completion = before.read(start - before.start_lsn, at - start)
        return ContinuedWal(start, completion, prev, fresh(at, max(end, at), prev))

    return run(start_lsn, _clean_end(start_lsn, size))
