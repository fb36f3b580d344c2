"""Terms, term histories and the highest common point of two histories.

A term history is a list of ``TermLsn(term, lsn)`` entries, each meaning "the leader of
``term`` wrote the WAL from ``lsn`` up to the next entry's lsn". Terms strictly increase and
LSNs never decrease (two entries may share an LSN when a leader wrote nothing).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import final, overload

import attrs

from ._errors import CommonPointError
from ._lsn import Lsn

__all__ = ["Term", "TermHistory", "TermLsn", "find_highest_common_point"]

Term = int
"""A u64 logical clock; each election uses a higher one. Term 0 never has a leader."""


def _check_term(_: object, __: object, term: int) -> None:
    if not 0 <= term <= 0xFFFF_FFFF_FFFF_FFFF:
        raise ValueError(f"term out of u64 range: {term}")


@final
@attrs.frozen(order=True)
class TermLsn:
    """``(term, lsn)``, ordered lexicographically: term first, then lsn.

    This is the ``<last_log_term, flush_lsn>`` comparison that ranks how advanced a node is.
    """

    term: Term = attrs.field(converter=int, validator=_check_term)
    lsn: Lsn = attrs.field(converter=Lsn)

    def __str__(self) -> str:
        return f"({self.term}, {self.lsn})"


def _to_entries(entries: Iterable[TermLsn]) -> tuple[TermLsn, ...]:
    return tuple(entries)


@final
@attrs.frozen
class TermHistory(Sequence[TermLsn]):
    """An immutable, validated term history; equality-comparable and hashable."""

    entries: tuple[TermLsn, ...] = attrs.field(converter=_to_entries)

    @entries.validator
    def _check(self, _: object, entries: tuple[TermLsn, ...]) -> None:
        untrusted: tuple[object, ...] = entries  # callers may pass anything at run time
        for entry in untrusted:
            if not isinstance(entry, TermLsn):
                raise TypeError(f"term history entries must be TermLsn, got {entry!r}")
        for prev, cur in itertools.pairwise(entries):
            if cur.term <= prev.term:
                raise ValueError(f"term history terms must increase: {prev} then {cur}")
            if cur.lsn < prev.lsn:
                raise ValueError(f"term history LSNs must not decrease: {prev} then {cur}")

    @classmethod
    def of(cls, *pairs: tuple[int, int]) -> TermHistory:
        """Build from ``(term, lsn)`` pairs: ``TermHistory.of((1, 10), (2, 20))``."""
        return cls(TermLsn(t, Lsn(lsn)) for t, lsn in pairs)

    @classmethod
    def from_entries(cls, entries: Iterable[TermLsn]) -> TermHistory:
        return cls(tuple(entries))

    @overload
    def __getitem__(self, index: int) -> TermLsn: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[TermLsn]: ...
    def __getitem__(self, index: int | slice) -> TermLsn | Sequence[TermLsn]:
        return self.entries[index]

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[TermLsn]:
        return iter(self.entries)

    def __str__(self) -> str:
        shown = self.entries[-20:]
        more = "…, " if len(self.entries) > 20 else ""
        return "[" + more + ", ".join(str(e) for e in shown) + "]"

    def up_to(self, lsn: Lsn) -> TermHistory:
        """The prefix of entries starting at or below ``lsn`` (inclusive)."""
        n = 0
        for entry in self.entries:
            if entry.lsn > lsn:
                break
            n += 1
        return TermHistory(self.entries[:n])

    def last_log_term(self, flush_lsn: Lsn) -> Term:
        """Term of the last entry of ``up_to(flush_lsn)``, or 0 if that prefix is empty."""
        # Read on every status, snapshot and donor selection: no validated copy is built.
        term: Term = 0
        for entry in self.entries:
            if entry.lsn > flush_lsn:
                break
            term = entry.term
        return term

    def extended(self, entry: TermLsn) -> TermHistory:
        """A copy with ``entry`` appended."""
        return TermHistory((*self.entries, entry))


def find_highest_common_point(
    prop_th: TermHistory, sk_th: TermHistory, sk_wal_end: Lsn
) -> TermLsn | None:
    """Where the safekeeper's WAL stops agreeing with the leader's history.

    ``prop_th`` is the leader's (donor's) history, conceptually ending at +infinity; ``sk_th``
    is the safekeeper's history already cut at its WAL end ``sk_wal_end``. Return the last
    common term and the LSN where the safekeeper must truncate and start receiving, or
    ``None`` when the histories share no term (including either being empty).

    Raise :class:`CommonPointError` when ``sk_th`` reaches past ``sk_wal_end`` or when both
    histories hold the same term with different start LSNs: both mean corruption or a bug.
    """
    if sk_th.entries and sk_th.entries[-1].lsn > sk_wal_end:
        raise CommonPointError(
            f"safekeeper history {sk_th} reaches past its WAL end {sk_wal_end}"
        )
    idx = -1
    for i in range(min(len(prop_th), len(sk_th))):
        p, s = prop_th.entries[i], sk_th.entries[i]
        if p.term != s.term:
            break
        if p.lsn != s.lsn:
            raise CommonPointError(
                f"same term {p.term} has different start LSNs: proposer {p.lsn}, "
                f"safekeeper {s.lsn}"
            )
        idx = i
    if idx == -1:
        return None
    term = prop_th.entries[idx].term
    if idx == len(prop_th) - 1:
        return TermLsn(term, sk_wal_end)
    prop_end = prop_th.entries[idx + 1].lsn
    sk_end = sk_th.entries[idx + 1].lsn if idx + 1 < len(sk_th) else sk_wal_end
    return TermLsn(term, min(prop_end, sk_end))
