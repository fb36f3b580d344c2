"""JSON shapes of the HTTP API, shared by the server and its clients. Pure functions.

* Timeline status (reference §8, plus ``last_log_term``, ``wal_seg_size``, ``broken`` and
  ``recovery``): :func:`timeline_status_json` builds it; :func:`parse_acceptor_state` reads
  the two fields recovery needs from a (possibly foreign) donor, leniently.
* Peer info (reference §9): :class:`PeerInfoBatch` / :class:`PeerTimelineInfo`,
  :func:`encode_peer_info_batch` and the strict :func:`decode_peer_info_batch`.
* Timeline creation: :func:`encode_create_timeline` / :func:`decode_create_timeline`.
* The change feed (``GET /v1/timelines/changes``): :func:`encode_changes` /
  :func:`decode_changes`.

All LSNs are ``"X/Y"`` strings. Decoders raise ``ValueError`` naming the offending field;
they ignore unknown keys (newer peers may send more) but never coerce types: a JSON
``true`` is not a term and ``"5"`` is not a node id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, TypeVar, final

import attrs

from ..core import (
    INVALID_LSN,
    Lsn,
    NodeId,
    PeerInfo,
    TenantId,
    TenantTimelineId,
    Term,
    TermHistory,
    TermLsn,
    TimelineId,
)
from ..timeline import Changes, Consumer, Receiver, TimelineParams, TimelineSnapshot
from ._wal_sender import WalSenderInfo

__all__ = [
    "PeerInfoBatch",
    "PeerTimelineInfo",
    "decode_changes",
    "decode_create_timeline",
    "decode_peer_info_batch",
    "encode_changes",
    "encode_create_timeline",
    "encode_peer_info_batch",
    "parse_acceptor_state",
    "parse_term_history",
    "peer_timeline_info",
    "term_history_json",
    "timeline_status_json",
]

_U64: Final = 0xFFFF_FFFF_FFFF_FFFF
MAX_ADDR_LEN: Final = 1024
JsonObject = dict[str, object]
_IdT = TypeVar("_IdT", TenantId, TimelineId)


# ---- field readers (strict) ------------------------------------------------------------


def _object(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _int(obj: Mapping[str, object], key: str, where: str, *, lo: int = 0, hi: int = _U64,
         default: int | None = None) -> int:
    value = obj.get(key, default)
    if value is None:
        raise ValueError(f"{where}.{key}: required")
    # bool is an int in Python but never a number in our API.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}.{key}: expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{where}.{key}: {value} out of range [{lo}, {hi}]")
    return value


def _lsn(obj: Mapping[str, object], key: str, where: str, *, default: Lsn | None = None) -> Lsn:
    value = obj.get(key)
    if value is None:
        if default is None:
            raise ValueError(f"{where}.{key}: required")
        return default
    if not isinstance(value, str):
        raise ValueError(f"{where}.{key}: expected an LSN string X/Y, got {type(value).__name__}")
    try:
        return Lsn.parse(value)
    except ValueError as e:
        raise ValueError(f"{where}.{key}: {e}") from None


def _str(obj: Mapping[str, object], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{where}.{key}: expected a string")
    return value


def _url(obj: Mapping[str, object], key: str, where: str, schemes: tuple[str, ...]) -> str:
    value = _str(obj, key, where)
    if len(value) > MAX_ADDR_LEN or not value.startswith(schemes) or any(
        c.isspace() or not c.isprintable() for c in value
    ):
        raise ValueError(f"{where}.{key}: expected a {'/'.join(schemes)} URL, got {value!r:.80}")
    return value


def _id(cls: type[_IdT], obj: Mapping[str, object], key: str, where: str) -> _IdT:
    text = _str(obj, key, where)
    try:
        return cls.parse(text)
    except ValueError as e:
        raise ValueError(f"{where}.{key}: {e}") from None


# ---- term history and timeline status ----------------------------------------------------


def term_history_json(history: Iterable[TermLsn]) -> list[JsonObject]:
    return [{"term": e.term, "lsn": str(e.lsn)} for e in history]


def parse_term_history(value: object, where: str = "term_history") -> TermHistory:
    """Parse ``[{"term": n, "lsn": "X/Y"}, …]`` into a validated :class:`TermHistory`."""
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list")
    entries = []
    for i, item in enumerate(value):
        entry = _object(item, f"{where}[{i}]")
        entries.append(TermLsn(_int(entry, "term", f"{where}[{i}]"),
                               _lsn(entry, "lsn", f"{where}[{i}]")))
    try:
        return TermHistory(entries)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def parse_acceptor_state(status: object) -> tuple[Term, TermHistory]:
    """``(term, term_history)`` from a timeline status object (reference §8).

    Lenient on purpose: only ``acceptor_state.term`` and ``acceptor_state.term_history``
    are required, so a donor that reports more (or other) fields still works.
    """
    state = _object(_object(status, "status").get("acceptor_state"), "acceptor_state")
    term = _int(state, "term", "acceptor_state")
    return term, parse_term_history(state.get("term_history"), "acceptor_state.term_history")


def timeline_status_json(
    snap: TimelineSnapshot,
    *,
    peers: Iterable[PeerInfo],
    walreceivers: Iterable[Receiver],
    walsenders: Iterable[WalSenderInfo],
    recovery: Mapping[str, object] | None,
    wal_lifecycle: Mapping[str, object] | None = None,
    pg_consumers: Iterable[Consumer] = (),
) -> JsonObject:
    """The status JSON of one timeline (reference §8 names, plus ours).

    ``peers`` should already be filtered to the alive ones; ``recovery`` is the recovery
    engine's status object, or ``None`` for ``{"state": "disabled"}``; ``wal_lifecycle``
    the WAL lifecycle's (archive, backup_lsn, removal horizon, uploader, lag), or ``None``
    when the node runs none (then the key is absent).
    """
    return {
        "tenant_id": str(snap.ttid.tenant_id),
        "timeline_id": str(snap.ttid.timeline_id),
        "acceptor_state": {
            "term": snap.term,
            "epoch": snap.last_log_term,
            "term_history": term_history_json(snap.term_history),
        },
        "pg_info": {
            "pg_version": snap.pg_version,
            "system_id": snap.system_id,
            "wal_seg_size": snap.wal_seg_size,
        },
        "last_log_term": snap.last_log_term,
        "wal_seg_size": snap.wal_seg_size,
        "flush_lsn": str(snap.flush_lsn),
        "commit_lsn": str(snap.commit_lsn),
        "timeline_start_lsn": str(snap.timeline_start_lsn),
        "local_start_lsn": str(snap.local_start_lsn),
        "backup_lsn": str(snap.backup_lsn),
        "peer_horizon_lsn": str(snap.peer_horizon_lsn),
        "remote_consistent_lsn": str(snap.remote_consistent_lsn),
        "peers": [
            {
                "sk_id": int(p.node_id),
                "term": p.term,
                "last_log_term": p.last_log_term,
                "flush_lsn": str(p.flush_lsn),
                "commit_lsn": str(p.commit_lsn),
                "local_start_lsn": str(p.local_start_lsn),
                "http_addr": p.http_addr,
                "wal_addr": p.wal_addr,
            }
            for p in sorted(peers, key=lambda p: int(p.node_id))
        ],
        "walreceivers": [
            {"id": r.id, "kind": r.kind, "status": r.status, "term": r.term,
             "remote": r.remote}
            for r in walreceivers
        ],
        "connected_proposers": snap.connected_proposers,
        "walsenders": [s.to_json() for s in walsenders],
        "pg_consumers": [c.to_json() for c in pg_consumers],
        "broken": snap.broken,
        "recovery": dict(recovery) if recovery is not None else {"state": "disabled"},
    } | ({"wal_lifecycle": dict(wal_lifecycle)} if wal_lifecycle is not None else {})


# ---- peer info ------------------------------------------------------------------------------


@final
@attrs.frozen
class PeerTimelineInfo:
    """What a node publishes about one of its timelines (reference §9 message fields)."""

    ttid: TenantTimelineId
    term: Term
    last_log_term: Term
    flush_lsn: Lsn
    commit_lsn: Lsn
    backup_lsn: Lsn = INVALID_LSN
    peer_horizon_lsn: Lsn = INVALID_LSN
    remote_consistent_lsn: Lsn = INVALID_LSN
    local_start_lsn: Lsn = INVALID_LSN

    def to_peer_info(self, node_id: NodeId, http_addr: str, wal_addr: str,
                     received_at: float) -> PeerInfo:
        """The receiver's view: stamped with *its* clock (``received_at``)."""
        return PeerInfo(
            node_id=node_id,
            term=self.term,
            last_log_term=self.last_log_term,
            flush_lsn=self.flush_lsn,
            commit_lsn=self.commit_lsn,
            http_addr=http_addr,
            wal_addr=wal_addr,
            received_at=received_at,
            backup_lsn=self.backup_lsn,
            peer_horizon_lsn=self.peer_horizon_lsn,
            remote_consistent_lsn=self.remote_consistent_lsn,
            local_start_lsn=self.local_start_lsn,
        )


@final
@attrs.frozen
class PeerInfoBatch:
    """One push of a node: its addresses and the info of (some of) its timelines.

    ``full``: ``timelines`` lists every timeline of the sender (a timeline not listed is
    gone); otherwise it lists only the ones that changed and ``removed`` the deleted ones
    (a *delta*; an empty delta is a heartbeat). ``session`` (random per sender) and ``seq``
    (consecutive per receiver) let the receiver tell whether it has applied every batch of
    the session in order; without a session every listed entry is just fresh info.
    """

    node_id: NodeId
    http_addr: str
    wal_addr: str
    timelines: tuple[PeerTimelineInfo, ...] = ()
    full: bool = True
    removed: tuple[TenantTimelineId, ...] = ()
    session: str | None = None
    seq: int = 0
    rejected: int = 0
    """Receiver side: entries :func:`decode_peer_info_batch` left out as invalid."""
    rejections: tuple[str, ...] = ()
    """Receiver side: why (the first few of them)."""


def peer_timeline_info(snap: TimelineSnapshot) -> PeerTimelineInfo:
    """What to publish about a timeline, from a consistent snapshot of it."""
    return PeerTimelineInfo(
        ttid=snap.ttid,
        term=snap.term,
        last_log_term=snap.last_log_term,
        flush_lsn=snap.flush_lsn,
        commit_lsn=snap.commit_lsn,
        backup_lsn=snap.backup_lsn,
        peer_horizon_lsn=snap.peer_horizon_lsn,
        remote_consistent_lsn=snap.remote_consistent_lsn,
        local_start_lsn=snap.local_start_lsn,
    )


def encode_peer_info_batch(batch: PeerInfoBatch) -> JsonObject:
    obj: JsonObject = {
        "node_id": int(batch.node_id),
        "http_addr": batch.http_addr,
        "wal_addr": batch.wal_addr,
        "full": batch.full,
        "removed": [
            {"tenant_id": str(t.tenant_id), "timeline_id": str(t.timeline_id)}
            for t in batch.removed
        ],
        "timelines": [
            {
                "tenant_id": str(t.ttid.tenant_id),
                "timeline_id": str(t.ttid.timeline_id),
                "term": t.term,
                "last_log_term": t.last_log_term,
                "flush_lsn": str(t.flush_lsn),
                "commit_lsn": str(t.commit_lsn),
                "backup_lsn": str(t.backup_lsn),
                "peer_horizon_lsn": str(t.peer_horizon_lsn),
                "remote_consistent_lsn": str(t.remote_consistent_lsn),
                "local_start_lsn": str(t.local_start_lsn),
            }
            for t in batch.timelines
        ],
    }
    if batch.session is not None:
        obj["session"] = batch.session
        obj["seq"] = batch.seq
    return obj


MAX_SESSION_LEN: Final = 64


def _ttid(value: object, where: str) -> TenantTimelineId:
    obj = _object(value, where)
    return TenantTimelineId(_id(TenantId, obj, "tenant_id", where),
                            _id(TimelineId, obj, "timeline_id", where))


def _decode_peer_timeline(value: object, where: str) -> PeerTimelineInfo:
    obj = _object(value, where)
    return PeerTimelineInfo(
        ttid=_ttid(obj, where),
        term=_int(obj, "term", where),
        last_log_term=_int(obj, "last_log_term", where),
        flush_lsn=_lsn(obj, "flush_lsn", where),
        commit_lsn=_lsn(obj, "commit_lsn", where),
        backup_lsn=_lsn(obj, "backup_lsn", where, default=INVALID_LSN),
        peer_horizon_lsn=_lsn(obj, "peer_horizon_lsn", where, default=INVALID_LSN),
        remote_consistent_lsn=_lsn(obj, "remote_consistent_lsn", where, default=INVALID_LSN),
        local_start_lsn=_lsn(obj, "local_start_lsn", where, default=INVALID_LSN),
    )


MAX_REJECTIONS_KEPT: Final = 10
"""A batch keeps the first this many entry errors (its answer and log line quote them)."""


def decode_peer_info_batch(value: object) -> PeerInfoBatch:
    """Validate a batch; a bad batch-level field raises ``ValueError`` naming it.

    A bad *entry* of ``timelines`` or ``removed`` does not: it is left out and counted in
    ``rejected`` (the first ``MAX_REJECTIONS_KEPT`` errors in ``rejections``), so one
    timeline with, say, a term out of range never costs every other timeline of the
    sender its peer info (issue 20). The horizons and ``local_start_lsn`` may be omitted
    (0/0); so may ``full`` (true), ``removed`` (none) and ``session`` (none: then ``seq``
    is not read). Everything else is required.
    """
    obj = _object(value, "batch")
    timelines = obj.get("timelines")
    if not isinstance(timelines, list):
        raise ValueError("batch.timelines: expected a list")
    removed = obj.get("removed", [])
    if not isinstance(removed, list):
        raise ValueError("batch.removed: expected a list")
    full = obj.get("full", True)
    if not isinstance(full, bool):
        raise ValueError("batch.full: expected true or false")
    session: str | None = None
    seq = 0
    if obj.get("session") is not None:
        session = _str(obj, "session", "batch")
        if not 0 < len(session) <= MAX_SESSION_LEN or not session.isascii() \
                or not session.isalnum():
            raise ValueError(f"batch.session: expected 1-{MAX_SESSION_LEN} letters or "
                             f"digits, got {session!r:.80}")
        seq = _int(obj, "seq", "batch")
    node_id = NodeId(_int(obj, "node_id", "batch"))
    http_addr = _url(obj, "http_addr", "batch", ("http://", "https://"))
    wal_addr = _url(obj, "wal_addr", "batch", ("ws://", "wss://"))
    rejections: list[str] = []
    rejected = 0
    good: list[PeerTimelineInfo] = []
    for i, t in enumerate(timelines):
        try:
            good.append(_decode_peer_timeline(t, f"timelines[{i}]"))
        except ValueError as e:
            rejected += 1
            if len(rejections) < MAX_REJECTIONS_KEPT:
                rejections.append(str(e)[:200])
    gone: list[TenantTimelineId] = []
    for i, t in enumerate(removed):
        try:
            gone.append(_ttid(t, f"removed[{i}]"))
        except ValueError as e:
            rejected += 1
            if len(rejections) < MAX_REJECTIONS_KEPT:
                rejections.append(str(e)[:200])
    return PeerInfoBatch(
        node_id=node_id,
        http_addr=http_addr,
        wal_addr=wal_addr,
        timelines=tuple(good),
        full=full,
        removed=tuple(gone),
        session=session,
        seq=seq,
        rejected=rejected,
        rejections=tuple(rejections),
    )


# ---- timeline creation ----------------------------------------------------------------------


def encode_create_timeline(timeline_id: TimelineId, params: TimelineParams) -> JsonObject:
    return {
        "timeline_id": str(timeline_id),
        "start_lsn": str(params.start_lsn),
        "wal_seg_size": params.wal_seg_size,
        "pg_version": params.pg_version,
        "system_id": params.system_id,
    }


def decode_create_timeline(value: object) -> tuple[TimelineId, TimelineParams]:
    """``{timeline_id, start_lsn, wal_seg_size?, pg_version?, system_id?}`` (strict)."""
    obj = _object(value, "body")
    defaults = TimelineParams(start_lsn=Lsn(1))
    timeline_id = _id(TimelineId, obj, "timeline_id", "body")
    start_lsn = _lsn(obj, "start_lsn", "body")
    wal_seg_size = _int(obj, "wal_seg_size", "body", default=defaults.wal_seg_size)
    pg_version = _int(obj, "pg_version", "body", hi=0xFFFF_FFFF, default=defaults.pg_version)
    system_id = _int(obj, "system_id", "body", default=defaults.system_id)
    try:
        params = TimelineParams(start_lsn, wal_seg_size, pg_version, system_id)
    except ValueError as e:
        raise ValueError(f"body: {e}") from None
    return timeline_id, params


# ---- the change feed ------------------------------------------------------------------------


def _ttid_json(ttid: TenantTimelineId) -> JsonObject:
    return {"tenant_id": str(ttid.tenant_id), "timeline_id": str(ttid.timeline_id)}


def encode_changes(changes: Changes) -> JsonObject:
    return {
        "session": changes.session,
        "cursor": changes.cursor,
        "reset": changes.reset,
        "changed": [_ttid_json(t) for t in changes.changed],
        "deleted": [_ttid_json(t) for t in changes.deleted],
    }


def decode_changes(value: object) -> Changes:
    """``{session, cursor, reset, changed: [ttid…], deleted: [ttid…]}`` (strict)."""
    obj = _object(value, "changes")
    reset = obj.get("reset")
    if not isinstance(reset, bool):
        raise ValueError("changes.reset: expected true or false")
    lists: dict[str, tuple[TenantTimelineId, ...]] = {}
    for key in ("changed", "deleted"):
        items = obj.get(key)
        if not isinstance(items, list):
            raise ValueError(f"changes.{key}: expected a list")
        lists[key] = tuple(_ttid(t, f"changes.{key}[{i}]") for i, t in enumerate(items))
    return Changes(
        session=_str(obj, "session", "changes"),
        cursor=_int(obj, "cursor", "changes"),
        changed=lists["changed"],
        deleted=lists["deleted"],
        reset=reset,
    )
