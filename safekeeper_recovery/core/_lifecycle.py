"""WAL lifecycle decisions (pure): who uploads a timeline's WAL, and what may be removed.

Theory of operation
-------------------
Every node of a timeline runs the same two decisions on what it knows (its own snapshot and
its alive peers' info) and acts only on its own disk and, if chosen, on the archive:

L1  Exactly one uploader per timeline in a settled cluster: among the *caught-up* nodes
    (the highest ``last_log_term`` seen, and a ``flush_lsn`` at or past the highest
    ``commit_lsn`` seen), the one with the highest rendezvous hash of (timeline id, node
    id). The hash spreads timelines over nodes; a node that falls behind or goes silent
    (it is no longer an alive peer) drops out and the next one takes over. Two nodes that
    briefly disagree both upload the same committed bytes under the same key: harmless.
L2  Only complete segments wholly at or below ``commit_lsn`` are uploaded, oldest first
    (several may be in flight at once); ``backup_lsn`` (the end of the archived prefix)
    advances only over segments whose uploads were all verified, and is durable before
    anyone (this node's removal, peers) acts on it.
L3  The removal horizon is ``min(commit_lsn, backup_lsn if an archive is configured,
    flush_lsn - keep_bytes if a keep size is set, the flush_lsn of every peer heard from
    lately)``, rounded down to a segment start. Without an archive and without a keep size
    nothing is removed (WAL grows without bound: the node warns at start-up). WAL that is
    not archived is never removed when an archive is configured. The peer hold keeps what
    a peer that lags (or was just restarted) still needs from us: recovery from the
    archive is not built yet, so without it that peer could never catch up; a peer silent
    for longer than the hold window stops holding anything. Consumer positions hold too:
    each PostgreSQL replication client's flush position (a standby, pg_receivewal),
    while it is connected and for the same hold window after it disconnected, so a
    standby that restarts or briefly streams from another node resumes here without a
    gap (``timeline/_consumers.py`` K1-K3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import final

import attrs

from ._donors import PeerInfo
from ._history import Term
from ._ids import NodeId, TenantTimelineId
from ._lsn import INVALID_LSN, Lsn

__all__ = ["UploaderChoice", "choose_uploader", "removal_horizon", "uploader_rank"]


def uploader_rank(ttid: TenantTimelineId, node_id: NodeId) -> int:
    """The rendezvous hash of L1: a stable pseudo-random rank of ``node_id`` for ``ttid``."""
    digest = hashlib.sha256(f"{ttid}/{int(node_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


@final
@attrs.frozen
class UploaderChoice:
    """The uploader of L1 and the inputs that justified it (one log line as ``str``)."""

    uploader: NodeId | None
    candidates: tuple[NodeId, ...]
    """Caught-up nodes, best rank first."""
    last_log_term: Term
    commit_lsn: Lsn
    """The highest commit_lsn seen (ours or a peer's): a candidate has flushed up to it."""

    def __str__(self) -> str:
        return (
            f"uploader={self.uploader} candidates={[int(n) for n in self.candidates]} "
            f"last_log_term={self.last_log_term} commit_lsn={self.commit_lsn}"
        )


def choose_uploader(
    ttid: TenantTimelineId,
    node_id: NodeId,
    last_log_term: Term,
    flush_lsn: Lsn,
    commit_lsn: Lsn,
    alive_peers: Iterable[PeerInfo],
) -> UploaderChoice:
    """Rule L1 over this node's position and its alive peers' (stale ones left out by the
    caller). Returns ``uploader=None`` only if no node is caught up (cannot happen while
    this node's own position counts, unless it is behind a peer)."""
    nodes = [(node_id, last_log_term, flush_lsn, commit_lsn)]
    nodes += [(p.node_id, p.last_log_term, p.flush_lsn, p.commit_lsn) for p in alive_peers
              if p.node_id != node_id]
    top_term = max(n[1] for n in nodes)
    top_commit = max(n[3] for n in nodes)
    caught_up = [n[0] for n in nodes if n[1] == top_term and n[2] >= top_commit]
    ranked = tuple(sorted(caught_up, key=lambda n: uploader_rank(ttid, n), reverse=True))
    return UploaderChoice(
        uploader=ranked[0] if ranked else None,
        candidates=ranked,
        last_log_term=top_term,
        commit_lsn=top_commit,
    )


def removal_horizon(
    *,
    commit_lsn: Lsn,
    flush_lsn: Lsn,
    seg_size: int,
    backup_lsn: Lsn | None,
    keep_bytes: int | None,
    peer_holds: Iterable[Lsn] = (),
    consumer_holds: Iterable[Lsn] = (),
) -> Lsn:
    """Rule L3: the segment start below which this node may remove its WAL.

    ``backup_lsn`` is ``None`` when no archive is configured; ``keep_bytes`` is ``None``
    when no keep size is set. With neither, returns ``INVALID_LSN`` (remove nothing).
    ``peer_holds``: the flush positions of the peers heard from within the hold window;
    ``consumer_holds``: the positions of the replication consumers that hold WAL.
    """
    if backup_lsn is None and keep_bytes is None:
        return INVALID_LSN
    horizon = min([int(commit_lsn), *(int(h) for h in peer_holds),
                   *(int(h) for h in consumer_holds)])
    if backup_lsn is not None:
        horizon = min(horizon, int(backup_lsn))
    if keep_bytes is not None:
        horizon = min(horizon, max(0, int(flush_lsn) - keep_bytes))
    return Lsn(horizon - horizon % seg_size)
