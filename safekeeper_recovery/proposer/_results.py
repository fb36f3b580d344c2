"""What a proposer run is configured with, reports while running, and returns."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Final, Literal, final

import attrs

from ..core import Greeting, Lsn, TenantId, Term, TimelineId

__all__ = [
    "NodeStatistics",
    "NodeStatus",
    "Phase",
    "ProposeResult",
    "ProposerConfig",
    "ProposerStatistics",
    "WalFormat",
]

WalFormat = Literal["random", "pg"]
PG_VERSION: Final = 150000
"""What a ``"pg"`` proposer greets with: its WAL is PostgreSQL 15's format."""
DEFAULT_PG_SEG_SIZE: Final = 16 * 1024 * 1024

NodeStatus = Literal[
    "connecting", "greeted", "voted", "refused", "streaming", "down", "failed", "closed"
]
"""``refused``: refused our term after a reconnect (rule P1a); waits for the election."""
Phase = Literal["electing", "streaming", "finishing", "done", "failed"]


def _to_urls(urls: Iterable[str]) -> tuple[str, ...]:
    return tuple(urls)


@final
@attrs.frozen
class ProposerConfig:
    """What to write where, and every timeout (seconds) and limit of the run.

    ``total_bytes`` and ``seed`` describe the generated WAL; a run given another WAL source
    (``Proposer(..., wal_source=...)``) ignores them."""

    safekeepers: tuple[str, ...] = attrs.field(converter=_to_urls)
    tenant_id: TenantId
    timeline_id: TimelineId
    total_bytes: int
    seed: int = 0
    expect_start_lsn: Lsn | None = None
    """If set, refuse to write unless the elected term starts exactly here."""
    window_bytes: int = 8 * 1024 * 1024
    """WAL sent to a node but not yet reported flushed by it, at most."""
    response_timeout: float = 30.0
    """A node with unflushed WAL that stays silent this long is dropped (and retried)."""
    keepalive_interval: float = 1.0
    reconnect_min: float = 0.1
    reconnect_max: float = 2.0
    lost_quorum_timeout: float = 3.0
    election_grace: float = 0.5
    """Once a quorum has greeted (and again once a quorum has voted), how long the other
    nodes get to answer before the election goes on without them (rule P6)."""
    drain_timeout: float = 5.0
    """Once committed, how long lagging nodes get to catch up before closing: those streaming
    and those that dropped out of the stream and may reconnect (a node killed for good
    mid-run costs this much; one never reached costs nothing)."""
    close_timeout: float = 5.0
    fetch_chunk: int = 8 * 1024 * 1024
    wal_format: WalFormat = "random"
    """``"random"``: pseudo-random bytes (``WalGenerator``); ``"pg"``: well-formed
    PostgreSQL 15 WAL (``pgwal.SyntheticWal``), greeting with its segment size, system id
    and pg_version so that a node whose timeline disagrees refuses (rule R1)."""
    wal_seg_size: int = 0
    """Greeting's segment size; 0 = the timeline's (then "pg" lays its WAL out for 16 MiB,
    without a check)."""
    system_id: int = 0
    """Greeting's system id; 0 = none ("pg" derives one from the tenant and timeline ids)."""
    pg_version: int = 0
    """Greeting's ``server_version_num`` for ``"random"`` WAL, or WAL from another source
    (0 = none; a node refuses another major version than its timeline's)."""

    @safekeepers.validator
    def _check(self, _: object, urls: tuple[str, ...]) -> None:
        if not urls:
            raise ValueError("need at least one safekeeper")
        if len(set(urls)) != len(urls):
            raise ValueError(f"safekeepers listed twice: {', '.join(urls)}")

    def pg_seg_size(self) -> int:
        """The segment size ``"pg"`` WAL is laid out for."""
        return self.wal_seg_size or DEFAULT_PG_SEG_SIZE

    def pg_system_id(self) -> int:
        """The system id ``"pg"`` WAL carries: ``system_id``, else one derived from the
        tenant and timeline ids, so every run on a timeline agrees without being told."""
        if self.system_id:
            return self.system_id
        digest = hashlib.blake2b(
            f"{self.tenant_id}/{self.timeline_id}".encode(), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big") or 1

    def greeting(self) -> Greeting:
        """What this proposer greets every node with."""
        if self.wal_format == "pg":
            return Greeting(
                self.tenant_id, self.timeline_id, PG_VERSION, self.pg_system_id(),
                self.pg_seg_size(),
            )
        return Greeting(
            self.tenant_id, self.timeline_id, self.pg_version, self.system_id,
            self.wal_seg_size,
        )


@final
@attrs.frozen
class NodeStatistics:
    status: NodeStatus
    """connecting, greeted, voted, streaming, down (retrying), failed (given up), closed."""
    flush_lsn: Lsn | None
    """Highest flush this node acknowledged in our term (None: none yet)."""
    last_error: str | None


@final
@attrs.frozen
class ProposerStatistics:
    phase: Phase
    term: Term | None
    start_lsn: Lsn | None
    end_lsn: Lsn | None
    commit_lsn: Lsn
    total_bytes: int
    nodes: Mapping[str, NodeStatistics]

    @property
    def committed_bytes(self) -> int:
        if self.start_lsn is None or self.commit_lsn < self.start_lsn:
            return 0
        return int(self.commit_lsn - self.start_lsn)


@final
@attrs.frozen
class ProposeResult:
    """A successful run: term, where it wrote (start_lsn .. end_lsn), commit_lsn and flushes."""

    term: Term
    start_lsn: Lsn
    end_lsn: Lsn
    commit_lsn: Lsn
    flush_lsns: Mapping[str, Lsn | None]
    bytes: int
    seconds: float
    committed: tuple[str, ...] = ()
    """The nodes that were sent an append carrying ``commit_lsn >= end_lsn`` once their
    flush (reported, or their start point in our term) was at ``end_lsn`` (rule P5)."""

    def summary(self) -> str:
        """One line for humans."""
        rate = self.bytes / self.seconds / 2**20 if self.seconds > 0 else 0.0
        # A node never reached in this run has no flush position: say so, not "None".
        flushes = ", ".join(f"{u}={'down' if f is None else f}"
                            for u, f in self.flush_lsns.items())
        return (
            f"term {self.term}: wrote {self.bytes} bytes {self.start_lsn}..{self.end_lsn} in "
            f"{self.seconds:.2f}s ({rate:.1f} MiB/s), commit_lsn {self.commit_lsn}; "
            f"flush: {flushes}"
        )
