"""What a proposer run is configured with, reports while running, and returns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, final

import attrs

from ..core import Lsn, TenantId, Term, TimelineId

__all__ = [
    "NodeStatistics",
    "NodeStatus",
    "Phase",
    "ProposeResult",
    "ProposerConfig",
    "ProposerStatistics",
]

NodeStatus = Literal["connecting", "greeted", "voted", "streaming", "down", "failed", "closed"]
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
    pg_version: int = 0
    system_id: int = 0
    wal_seg_size: int = 0
    """Sent in the greeting (0: unknown); a safekeeper refuses a mismatching segment size
    or major version."""
    window_bytes: int = 8 * 1024 * 1024
    """WAL sent to a node but not yet reported flushed by it, at most."""
    response_timeout: float = 30.0
    """A node with unflushed WAL that stays silent this long is dropped (and retried)."""
    keepalive_interval: float = 1.0
    reconnect_min: float = 0.1
    reconnect_max: float = 2.0
    lost_quorum_timeout: float = 3.0
    drain_timeout: float = 5.0
    """Once committed, how long lagging nodes get to catch up before closing: those streaming
    and those that dropped out of the stream and may reconnect (a node killed for good
    mid-run costs this much; one never reached costs nothing)."""
    close_timeout: float = 5.0
    fetch_chunk: int = 8 * 1024 * 1024

    @safekeepers.validator
    def _check(self, _: object, urls: tuple[str, ...]) -> None:
        if not urls:
            raise ValueError("need at least one safekeeper")
        if len(set(urls)) != len(urls):
            raise ValueError(f"safekeepers listed twice: {', '.join(urls)}")


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

    def summary(self) -> str:
        """One line for humans."""
        rate = self.bytes / self.seconds / 2**20 if self.seconds > 0 else 0.0
        flushes = ", ".join(f"{u}={f}" for u, f in self.flush_lsns.items())
        return (
            f"term {self.term}: wrote {self.bytes} bytes {self.start_lsn}..{self.end_lsn} in "
            f"{self.seconds:.2f}s ({rate:.1f} MiB/s), commit_lsn {self.commit_lsn}; "
            f"flush: {flushes}"
        )
