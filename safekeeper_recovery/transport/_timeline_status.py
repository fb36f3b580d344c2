"""The timeline status JSON, typed: what a client (the tests, the toolbox) reads of it.

:func:`parse_timeline_status` validates a ``GET /v1/tenant/{t}/timeline/{tl}`` answer into
a :class:`TimelineStatus`; a missing or wrongly typed field is a ``ValueError`` naming it
(``timeline status.recovery.bytes: expected an integer, got str``). Fields not modelled
here stay readable in ``TimelineStatus.raw``. The shape it reads is the one
``timeline_status_json`` writes (and ``transport/openapi.json`` documents).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import final

import attrs

from ..core import Lsn, TenantId, TenantTimelineId, Term, TermHistory, TimelineId
from ._json import _id, _int, _lsn, _object, parse_acceptor_state

__all__ = ["DiskReport", "PgConsumerReport", "RecoveryReport", "TimelineStatus",
           "WalLifecycleReport", "parse_timeline_status"]

_WHERE = "timeline status"


def _opt_lsn(obj: Mapping[str, object], key: str, where: str) -> Lsn | None:
    return None if obj.get(key) is None else _lsn(obj, key, where)


def _opt_int(obj: Mapping[str, object], key: str, where: str) -> int | None:
    return None if obj.get(key) is None else _int(obj, key, where)


def _opt_str(obj: Mapping[str, object], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}.{key}: expected a string or null, got {type(value).__name__}")
    return value


def _opt_time(obj: Mapping[str, object], key: str, where: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{where}.{key}: expected a number or null, got {type(value).__name__}")
    return float(value)


@final
@attrs.frozen
class RecoveryReport:
    """The status JSON's ``recovery`` object (the engine's ``RecoveryStatus.to_json``).

    A node without recovery reports only ``state == "disabled"``: the other fields then
    keep their defaults.
    """

    state: str
    donor: int | None = None
    start_lsn: Lsn | None = None
    target_lsn: Lsn | None = None
    received_lsn: Lsn | None = None
    flushed_lsn: Lsn | None = None
    bytes: int = 0
    total_bytes: int = 0
    attempts: int = 0
    lag_bytes: int = 0
    evaluations: int = 0
    started_at: float | None = None
    flushed_at: float | None = None
    first_data_at: float | None = None
    last_data_at: float | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    why_no_donor: str | None = None
    rate_bytes_per_second: int = 0
    eta_seconds: float | None = None
    quorum_at_risk: bool = False
    queue_position: int | None = None
    """1-based place in the node's recovery queue while ``state == "waiting"``."""
    paused: str | None = None
    """Why recovery waits (state ``paused``: the disk is past --max-disk-usage)."""

    @classmethod
    def parse(cls, value: object, where: str = f"{_WHERE}.recovery") -> RecoveryReport:
        """Validate the ``recovery`` object; ``ValueError`` names the field at fault."""
        obj = _object(value, where)
        state = obj.get("state")
        if not isinstance(state, str):
            raise ValueError(f"{where}.state: expected a string, got {type(state).__name__}")
        return cls(
            state=state,
            donor=_opt_int(obj, "donor", where),
            start_lsn=_opt_lsn(obj, "start_lsn", where),
            target_lsn=_opt_lsn(obj, "target_lsn", where),
            received_lsn=_opt_lsn(obj, "received_lsn", where),
            flushed_lsn=_opt_lsn(obj, "flushed_lsn", where),
            bytes=_int(obj, "bytes", where, default=0),
            total_bytes=_int(obj, "total_bytes", where, default=0),
            attempts=_int(obj, "attempts", where, default=0),
            lag_bytes=_int(obj, "lag_bytes", where, default=0),
            evaluations=_int(obj, "evaluations", where, default=0),
            started_at=_opt_time(obj, "started_at", where),
            flushed_at=_opt_time(obj, "flushed_at", where),
            first_data_at=_opt_time(obj, "first_data_at", where),
            last_data_at=_opt_time(obj, "last_data_at", where),
            last_outcome=_opt_str(obj, "last_outcome", where),
            last_error=_opt_str(obj, "last_error", where),
            why_no_donor=_opt_str(obj, "why_no_donor", where),
            rate_bytes_per_second=_int(obj, "rate_bytes_per_second", where, default=0),
            eta_seconds=_opt_time(obj, "eta_seconds", where),
            quorum_at_risk=obj.get("quorum_at_risk") is True,
            queue_position=_opt_int(obj, "queue_position", where),
            paused=_opt_str(obj, "paused", where),
        )


@final
@attrs.frozen
class DiskReport:
    """The ``disk`` object: the data directory's file system as the disk guard last
    measured it (rules U1-U4), the limit, and why WAL is refused (``refusing``)."""

    path: str
    fs_size_bytes: int | None
    fs_used_bytes: int | None
    fs_available_bytes: int | None
    max_disk_usage: str | None
    limit_bytes: int | None
    refusing: str | None
    refusing_since: float | None
    refused_appends: int

    @classmethod
    def parse(cls, value: object, where: str) -> DiskReport:
        obj = _object(value, where)
        path = _opt_str(obj, "path", where)
        if path is None:
            raise ValueError(f"{where}.path: required")
        return cls(
            path=path,
            fs_size_bytes=_opt_int(obj, "fs_size_bytes", where),
            fs_used_bytes=_opt_int(obj, "fs_used_bytes", where),
            fs_available_bytes=_opt_int(obj, "fs_available_bytes", where),
            max_disk_usage=_opt_str(obj, "max_disk_usage", where),
            limit_bytes=_opt_int(obj, "limit_bytes", where),
            refusing=_opt_str(obj, "refusing", where),
            refusing_since=_opt_time(obj, "refusing_since", where),
            refused_appends=_int(obj, "refused_appends", where, default=0),
        )


@final
@attrs.frozen
class WalLifecycleReport:
    """The ``wal_lifecycle`` object: archive, removal and disk use of one timeline
    (docs/archive.md "Observing it")."""

    archive: str | None
    wal_keep_size: int | None
    backup_lsn: Lsn
    removal_horizon: Lsn
    archive_lag_bytes: int | None
    archive_lag_seconds: float | None
    uploader: int | None
    uploaded_segments: int
    uploaded_bytes: int
    last_uploaded: str | None
    removed_segments: int
    removed_bytes: int
    upload_seconds: float
    removal_seconds: float
    wal_disk_bytes: int
    failures: int
    failures_by_kind: Mapping[str, int]
    last_error: str | None
    last_error_kind: str | None
    last_error_at: float | None
    disk: DiskReport | None

    @classmethod
    def parse(cls, value: object, where: str = f"{_WHERE}.wal_lifecycle") -> WalLifecycleReport:
        """Validate the ``wal_lifecycle`` object; ``ValueError`` names the field at fault."""
        obj = _object(value, where)
        kinds = _object(obj.get("failures_by_kind", {}), f"{where}.failures_by_kind")
        return cls(
            archive=_opt_str(obj, "archive", where),
            wal_keep_size=_opt_int(obj, "wal_keep_size", where),
            backup_lsn=_lsn(obj, "backup_lsn", where),
            removal_horizon=_lsn(obj, "removal_horizon", where),
            archive_lag_bytes=_opt_int(obj, "archive_lag_bytes", where),
            archive_lag_seconds=_opt_time(obj, "archive_lag_seconds", where),
            uploader=_opt_int(obj, "uploader", where),
            uploaded_segments=_int(obj, "uploaded_segments", where, default=0),
            uploaded_bytes=_int(obj, "uploaded_bytes", where, default=0),
            last_uploaded=_opt_str(obj, "last_uploaded", where),
            removed_segments=_int(obj, "removed_segments", where, default=0),
            removed_bytes=_int(obj, "removed_bytes", where, default=0),
            upload_seconds=_opt_time(obj, "upload_seconds", where) or 0.0,
            removal_seconds=_opt_time(obj, "removal_seconds", where) or 0.0,
            wal_disk_bytes=_int(obj, "wal_disk_bytes", where, default=0),
            failures=_int(obj, "failures", where, default=0),
            failures_by_kind={k: _int(kinds, k, f"{where}.failures_by_kind") for k in kinds},
            last_error=_opt_str(obj, "last_error", where),
            last_error_kind=_opt_str(obj, "last_error_kind", where),
            last_error_at=_opt_time(obj, "last_error_at", where),
            disk=(None if obj.get("disk") is None
                  else DiskReport.parse(obj["disk"], f"{where}.disk")),
        )


@final
@attrs.frozen
class PgConsumerReport:
    """One entry of the status JSON's ``pg_consumers``: a PostgreSQL replication client
    of the timeline (``timeline/_consumers.py``), connected or still holding WAL."""

    name: str
    application_name: str
    slot: str | None
    remote: str
    connected: bool
    start_lsn: Lsn
    sent_lsn: Lsn
    write_lsn: Lsn | None
    flush_lsn: Lsn | None
    apply_lsn: Lsn | None
    hold_lsn: Lsn

    @classmethod
    def parse(cls, value: object, where: str) -> PgConsumerReport:
        obj = _object(value, where)
        texts = {}
        for key in ("name", "application_name", "remote"):
            text = obj.get(key)
            if not isinstance(text, str):
                raise ValueError(f"{where}.{key}: expected a string, got {type(text).__name__}")
            texts[key] = text
        connected = obj.get("connected")
        if not isinstance(connected, bool):
            raise ValueError(f"{where}.connected: expected a boolean")
        return cls(
            name=texts["name"], application_name=texts["application_name"],
            slot=_opt_str(obj, "slot", where), remote=texts["remote"], connected=connected,
            start_lsn=_lsn(obj, "start_lsn", where), sent_lsn=_lsn(obj, "sent_lsn", where),
            write_lsn=_opt_lsn(obj, "write_lsn", where),
            flush_lsn=_opt_lsn(obj, "flush_lsn", where),
            apply_lsn=_opt_lsn(obj, "apply_lsn", where),
            hold_lsn=_lsn(obj, "hold_lsn", where),
        )


@final
@attrs.frozen
class TimelineStatus:
    """One timeline's status as a node reports it (``GET /v1/tenant/{t}/timeline/{tl}``)."""

    ttid: TenantTimelineId
    term: Term
    last_log_term: Term
    term_history: TermHistory
    flush_lsn: Lsn
    commit_lsn: Lsn
    timeline_start_lsn: Lsn
    local_start_lsn: Lsn
    backup_lsn: Lsn
    wal_seg_size: int
    connected_proposers: int
    broken: str | None
    recovery: RecoveryReport
    wal_lifecycle: Mapping[str, object] | None
    """The WAL lifecycle's object (archive, horizons, uploader), or ``None`` when the node
    runs no lifecycle."""
    pg_consumers: tuple[PgConsumerReport, ...]
    """The PostgreSQL replication consumers (the pg port's), oldest first."""
    lifecycle: WalLifecycleReport | None
    """The same object, validated and typed."""
    raw: Mapping[str, object] = attrs.field(repr=False)
    """The whole document, for the fields not modelled here (peers, receivers, senders)."""


def parse_timeline_status(doc: object) -> TimelineStatus:
    """Validate a timeline status JSON document (already parsed from JSON).

    Raises ``ValueError`` naming the first field that is missing or of the wrong type.
    """
    obj = _object(doc, _WHERE)
    ttid = TenantTimelineId(_id(TenantId, obj, "tenant_id", _WHERE),
                            _id(TimelineId, obj, "timeline_id", _WHERE))
    term, history = parse_acceptor_state(obj)
    broken = _opt_str(obj, "broken", _WHERE)
    lifecycle = obj.get("wal_lifecycle")
    return TimelineStatus(
        ttid=ttid,
        term=term,
        last_log_term=_int(obj, "last_log_term", _WHERE),
        term_history=history,
        flush_lsn=_lsn(obj, "flush_lsn", _WHERE),
        commit_lsn=_lsn(obj, "commit_lsn", _WHERE),
        timeline_start_lsn=_lsn(obj, "timeline_start_lsn", _WHERE),
        local_start_lsn=_lsn(obj, "local_start_lsn", _WHERE),
        backup_lsn=_lsn(obj, "backup_lsn", _WHERE),
        wal_seg_size=_int(obj, "wal_seg_size", _WHERE),
        connected_proposers=_int(obj, "connected_proposers", _WHERE),
        broken=broken,
        recovery=RecoveryReport.parse(obj.get("recovery")),
        wal_lifecycle=None if lifecycle is None else _object(lifecycle,
                                                             f"{_WHERE}.wal_lifecycle"),
        pg_consumers=tuple(
            PgConsumerReport.parse(c, f"{_WHERE}.pg_consumers[{i}]")
            for i, c in enumerate(_list(obj.get("pg_consumers", []), f"{_WHERE}.pg_consumers"))
        ),
        lifecycle=None if lifecycle is None else WalLifecycleReport.parse(lifecycle),
        raw=obj,
    )


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
    return value
