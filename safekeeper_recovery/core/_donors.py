"""Donor selection for peer recovery (reference §4.2), explained.

:func:`select_donors` is pure: the caller passes the local view, the peers table and the
current monotonic time; it returns the eligible donors, most advanced first, together with
every input and a per-peer reason, so one log line (``str(result)``) says why.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import final

import attrs

from ._history import Term, TermHistory, TermLsn
from ._ids import NodeId
from ._lsn import INVALID_LSN, Lsn

__all__ = ["DonorSelection", "DonorStatus", "LocalView", "PeerInfo", "select_donors",
           "select_for"]


@final
@attrs.frozen
class PeerInfo:
    """What a peer said about one timeline, stamped with our local receive time."""

    node_id: NodeId
    term: Term
    last_log_term: Term
    flush_lsn: Lsn
    commit_lsn: Lsn
    http_addr: str
    """Base URL of the peer's HTTP API, e.g. ``http://127.0.0.1:7676``."""
    wal_addr: str
    """Base URL of the peer's WAL port, e.g. ``ws://127.0.0.1:5454``."""
    received_at: float
    """Our monotonic clock when this info arrived (not the peer's clock)."""
    backup_lsn: Lsn = INVALID_LSN
    peer_horizon_lsn: Lsn = INVALID_LSN
    remote_consistent_lsn: Lsn = INVALID_LSN
    local_start_lsn: Lsn = INVALID_LSN

    @property
    def position(self) -> TermLsn:
        return TermLsn(self.last_log_term, self.flush_lsn)


@final
@attrs.frozen
class DonorSelection:
    """The result of donor selection and the inputs that justified it."""

    term: Term
    last_log_term: Term
    flush_lsn: Lsn
    connected_proposers: int
    donors: tuple[PeerInfo, ...]
    reasons: tuple[tuple[NodeId, str], ...]
    """Why each known peer is or is not a donor, in the order considered."""

    @property
    def why_no_donor(self) -> str | None:
        """``None`` when there is a donor; otherwise one human-readable sentence."""
        if self.donors:
            return None
        if self.connected_proposers:
            return f"{self.connected_proposers} proposer(s) connected to this node"
        if not self.reasons:
            return "no alive peers"
        return "; ".join(f"sk {node}: {why}" for node, why in self.reasons)

    def __str__(self) -> str:
        peers = ", ".join(f"{node}: {why}" for node, why in self.reasons)
        donors = [int(d.node_id) for d in self.donors]
        return (
            f"term={self.term} last_log_term={self.last_log_term} flush_lsn={self.flush_lsn} "
            f"connected_proposers={self.connected_proposers} donors={donors} "
            f"peers={{{peers}}}"
        )


def select_donors(
    *,
    my_node_id: NodeId,
    my_term: Term,
    my_last_log_term: Term,
    my_flush_lsn: Lsn,
    peers: Iterable[PeerInfo],
    connected_proposers: int,
    now: float,
    heartbeat_timeout: float,
) -> DonorSelection:
    """Donors are alive peers strictly ahead of us in ``(last_log_term, flush_lsn)`` whose
    ``term == last_log_term`` (their leader was elected and they applied its ProposerElected)
    and whose ``term >= my_term`` (else we would refuse the data); none while a proposer
    is connected to us (greeted, voting or streaming: recovery must never disturb its
    election or its stream). Sorted most advanced first (ranked by position, never by term alone).
    """
    mine = TermLsn(my_last_log_term, my_flush_lsn)
    considered = sorted(
        (p for p in peers if p.node_id != my_node_id),
        key=lambda p: (p.position, -int(p.node_id)),
        reverse=True,
    )
    donors: list[PeerInfo] = []
    reasons: list[tuple[NodeId, str]] = []
    for p in considered:
        age = now - p.received_at
        if age > heartbeat_timeout:
            why = f"not alive (last info {age:.1f}s ago > {heartbeat_timeout:g}s)"
        elif not mine < p.position:
            why = f"not ahead ({p.position} <= ours {mine})"
        elif p.term != p.last_log_term:
            why = f"term {p.term} != last_log_term {p.last_log_term} (leader not established)"
        elif p.term < my_term:
            why = f"term {p.term} < our term {my_term}"
        elif connected_proposers:
            why = "eligible, but a proposer is connected to us"
        else:
            donors.append(p)
            why = f"donor at {p.position}"
        reasons.append((p.node_id, why))
    return DonorSelection(
        term=my_term,
        last_log_term=my_last_log_term,
        flush_lsn=my_flush_lsn,
        connected_proposers=connected_proposers,
        donors=tuple(donors),
        reasons=tuple(reasons),
    )


@final
@attrs.frozen
class LocalView:
    """The local inputs of donor selection, read atomically by a recovery target."""

    term: Term
    last_log_term: Term
    flush_lsn: Lsn
    peers: Sequence[PeerInfo]
    connected_proposers: int
    now: float
    """The target's clock for ``PeerInfo.received_at`` comparisons."""
    commit_lsn: Lsn = INVALID_LSN
    """The local commit position (for the quorum-at-risk check; peers carry their own)."""


def select_for(node_id: NodeId, view: LocalView, heartbeat_timeout: float) -> DonorSelection:
    """Donor selection over one local view (the one place the view is unpacked)."""
    return select_donors(
        my_node_id=node_id,
        my_term=view.term,
        my_last_log_term=view.last_log_term,
        my_flush_lsn=view.flush_lsn,
        peers=view.peers,
        connected_proposers=view.connected_proposers,
        now=view.now,
        heartbeat_timeout=heartbeat_timeout,
    )


@final
@attrs.frozen
class DonorStatus:
    """The two fields of a donor's status that recovery needs: its term and history."""

    term: Term
    term_history: TermHistory
