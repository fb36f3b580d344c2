"""A timeline's persistent state (what the control file holds) and its byte encoding."""

from __future__ import annotations

import json
from typing import Any, final

import attrs

from ._errors import CorruptionError
from ._history import Term, TermHistory, TermLsn
from ._ids import TenantId, TimelineId
from ._lsn import INVALID_LSN, Lsn

__all__ = ["PersistentState", "ServerInfo", "decode_state", "encode_state"]


def _u64_field(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    # The control file must never hold a value it cannot load again (issue 20: a term of
    # 2^64 made a timeline unloadable), so the state itself refuses one.
    if not 0 <= value <= 0xFFFF_FFFF_FFFF_FFFF:
        raise ValueError(f"{attribute.name} out of u64 range: {value}")


@final
@attrs.frozen
class ServerInfo:
    """What the PostgreSQL server behind the timeline is (every field a u64)."""

    pg_version: int = attrs.field(default=0, validator=_u64_field)
    system_id: int = attrs.field(default=0, validator=_u64_field)
    wal_seg_size: int = attrs.field(default=16 * 1024 * 1024, validator=_u64_field)


@final
@attrs.frozen
class PersistentState:
    """Everything about a timeline that must survive a crash (Neon's control file).

    ``term`` / ``term_history`` are the acceptor state; the ``*_lsn`` horizons are persisted
    lazily (an in-memory overlay runs ahead of them, see the acceptor). A ``term`` outside
    the u64 range raises ``ValueError`` (LSNs are ``Lsn``, which checks its own range).
    """

    tenant_id: TenantId
    timeline_id: TimelineId
    term: Term = attrs.field(validator=_u64_field)
    term_history: TermHistory
    server: ServerInfo
    timeline_start_lsn: Lsn
    local_start_lsn: Lsn
    commit_lsn: Lsn
    backup_lsn: Lsn = INVALID_LSN
    peer_horizon_lsn: Lsn = INVALID_LSN
    remote_consistent_lsn: Lsn = INVALID_LSN

    @classmethod
    def new_timeline(
        cls,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        start_lsn: Lsn,
        server: ServerInfo,
    ) -> PersistentState:
        """A fresh timeline: term 0 and history ``[(0, start_lsn)]``, so a common point with
        every later leader's history always exists (DESIGN.md, binding)."""
        return cls(
            tenant_id=tenant_id,
            timeline_id=timeline_id,
            term=0,
            term_history=TermHistory((TermLsn(0, start_lsn),)),
            server=server,
            timeline_start_lsn=start_lsn,
            local_start_lsn=start_lsn,
            commit_lsn=start_lsn,
            backup_lsn=start_lsn,
            peer_horizon_lsn=start_lsn,
        )


_LSN_FIELDS = (
    "timeline_start_lsn",
    "local_start_lsn",
    "commit_lsn",
    "backup_lsn",
    "peer_horizon_lsn",
    "remote_consistent_lsn",
)


def encode_state(state: PersistentState) -> bytes:
    """The control file body: compact, sorted JSON (human-inspectable with ``jq``)."""
    doc: dict[str, Any] = {
        "tenant_id": str(state.tenant_id),
        "timeline_id": str(state.timeline_id),
        "term": state.term,
        "term_history": [[e.term, int(e.lsn)] for e in state.term_history],
        "server": attrs.asdict(state.server),
    }
    for name in _LSN_FIELDS:
        doc[name] = int(getattr(state, name))
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode_state(body: bytes) -> PersistentState:
    """Inverse of :func:`encode_state`; anything unexpected raises ``CorruptionError``."""
    try:
        doc = json.loads(body)
        return PersistentState(
            tenant_id=TenantId.parse(doc["tenant_id"]),
            timeline_id=TimelineId.parse(doc["timeline_id"]),
            term=_u64(doc["term"]),
            term_history=TermHistory(
                tuple(TermLsn(_u64(t), Lsn(_u64(lsn))) for t, lsn in doc["term_history"])
            ),
            server=ServerInfo(
                pg_version=_u64(doc["server"]["pg_version"]),
                system_id=_u64(doc["server"]["system_id"]),
                wal_seg_size=_u64(doc["server"]["wal_seg_size"]),
            ),
            **{name: Lsn(_u64(doc[name])) for name in _LSN_FIELDS},
        )
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as e:
        raise CorruptionError(f"control file body does not decode: {e!r}") from None


def _u64(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise ValueError(f"expected a u64, got {value!r}")
    return value
