"""``sync``: Neon's sync-safekeepers (reference Appendix C): elect, bring the quorum to the
most advanced WAL, commit it, report the commit LSN, stop.

Theory of operation
-------------------
A writer (a proposer, an ingest from PostgreSQL) tells the safekeepers its commit_lsn on its
*next* append, so when it dies the nodes' commit_lsn may be behind what it already counted
as committed (and, for an ingest, what PostgreSQL was told is flushed, i.e. what a
synchronous commit returned for). Before a failover, :func:`sync_safekeepers` runs an
ordinary proposer in a new term that writes **no WAL of its own**: the election picks the
donor (the most advanced voter), every voter is truncated to and caught up with the donor's
WAL (fetched from the donor, rule P3 of the proposer), and the term start, which is the
donor's flush, is committed on a quorum. Whatever a quorum had flushed is on the donor (two
quorums share a node, and the donor is the most advanced voter), so all of it is then
committed and the nodes' commit_lsn says so; a standby streaming from them sees all of it.

Rules
-----
Y1  The WAL committed is exactly the donor's: ``commit_lsn == term_start_lsn``; no byte is
    written that was not already on a node.
Y2  Success needs a quorum that flushed up to ``commit_lsn`` in the new term and was told
    that commit; every other node that joined gets ``drain_timeout`` to catch up (proposer
    rule P5), like Neon's sync-safekeepers, which waits for every live node.
Y3  Fewer than a quorum reachable: :class:`LostQuorumError`; another proposer elected
    meanwhile: :class:`NewerTermError` (both leave every node's committed WAL as it was).
Y4  The greeting carries no server parameters (the timeline's own are kept).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, final

import attrs
import trio

from ..core import Lsn, Term
from ._connection import Connect, FetchWal
from ._election import Election
from ._proposer import Proposer
from ._results import ProposerConfig, ProposeResult

__all__ = ["SYNC_KEEPALIVE", "SyncResult", "sync_safekeepers"]

SYNC_KEEPALIVE: Final = 0.05
"""Seconds between idle appends in a sync (see :func:`sync_safekeepers`)."""


@final
@attrs.frozen
class SyncResult:
    """A finished sync: the new term, its donor, the commit LSN every synced node holds."""

    term: Term
    commit_lsn: Lsn
    """The donor's flush: all WAL a quorum held, now committed (Y1)."""
    donor: str
    votes: Mapping[str, Lsn]
    """Each voter's flush_lsn when it voted (before the sync)."""
    flush_lsns: Mapping[str, Lsn | None]
    """Each node's flush as last reported in the new term (None: it answered no append,
    e.g. never reached; a node already at commit_lsn need not answer one to be synced)."""
    synced: tuple[str, ...]
    """The nodes that hold all WAL up to commit_lsn and were sent that commit (Y2)."""
    seconds: float

    def summary(self) -> str:
        """One line for humans."""
        return (
            f"synced in term {self.term}: commit_lsn {self.commit_lsn} (donor {self.donor}); "
            f"{len(self.synced)} of {len(self.flush_lsns)} nodes hold it ("
            + ", ".join(f"{url} {self.node_state(url)}" for url in self.flush_lsns)
            + f") in {self.seconds:.2f}s"
        )

    def node_state(self, url: str) -> str:
        """``synced``; ``behind at X/Y`` (its last reported flush in the new term); ``voted
        at X/Y, not caught up`` (e.g. no WAL fetcher); or ``not reached``."""
        if url in self.synced:
            return "synced"
        flush = self.flush_lsns.get(url)
        if flush is not None:
            return f"behind at {flush}"
        if url in self.votes:
            return f"voted at {self.votes[url]}, not caught up"
        return "not reached"

    def to_json(self) -> dict[str, Any]:
        return {
            "term": self.term,
            "commit_lsn": str(self.commit_lsn),
            "donor": self.donor,
            "seconds": round(self.seconds, 3),
            "safekeepers": {
                url: {
                    "flush_lsn_before": None if url not in self.votes else str(self.votes[url]),
                    "flush_lsn": None if f is None else str(f),  # as last reported
                    "synced": url in self.synced,
                }
                for url, f in self.flush_lsns.items()
            },
        }


class _NoWal:
    """Y1: a WAL source that holds nothing and ends where it starts."""

    def __init__(self, start: Lsn) -> None:
        self._start = start

    @property
    def first(self) -> Lsn:
        return self._start

    @property
    def available(self) -> Lsn:
        return self._start

    @property
    def final_end(self) -> Lsn:
        return self._start

    def read_wal(self, start: Lsn, end: Lsn) -> bytes:
        if start != self._start or end != self._start:
            raise ValueError(f"sync writes no WAL: asked for {start}..{end}")
        return b""

    def committed(self, commit_lsn: Lsn) -> None:
        pass

    async def run(self, notify: Callable[[], None]) -> None:
        await trio.lowlevel.checkpoint()


async def sync_safekeepers(
    config: ProposerConfig, connect: Connect, *, fetch_wal: FetchWal | None = None
) -> SyncResult:
    """Run one sync over ``config.safekeepers`` (its WAL settings are ignored, Y4) and
    return the result; raises :class:`LostQuorumError` or :class:`NewerTermError` (Y3).
    ``fetch_wal`` catches up voters that lag behind the donor; without it such a voter is
    left out (a quorum of others must then hold the WAL)."""
    # A voter already at the term start reports its flush only when asked: on an (empty)
    # append, which the proposer sends when idle every keepalive_interval. Sync is short
    # and waits for nothing else, so it asks often.
    cfg = attrs.evolve(config, total_bytes=0, wal_format="random", wal_seg_size=0,
                       system_id=0, pg_version=0, expect_start_lsn=None,
                       keepalive_interval=min(config.keepalive_interval, SYNC_KEEPALIVE))
    elections: list[Election] = []

    def no_wal(election: Election) -> _NoWal:
        elections.append(election)
        return _NoWal(election.term_start_lsn)

    result: ProposeResult = await Proposer(cfg, connect, fetch_wal=fetch_wal,
                                           wal_source=no_wal).run()
    [election] = elections
    assert result.commit_lsn == election.term_start_lsn, "Y1: sync commits the donor's WAL"
    return SyncResult(
        term=result.term,
        commit_lsn=result.commit_lsn,
        donor=election.donor,
        votes={url: v.flush_lsn for url, v in election.votes.items()},
        flush_lsns=dict(result.flush_lsns),
        synced=result.committed,
        seconds=result.seconds,
    )
