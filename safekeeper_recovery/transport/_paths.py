"""Strict parsing of request targets: timeline paths, ids, LSNs, terms, query strings.

Shared by the WAL port and the HTTP app. Everything that fails raises :class:`BadRequest`
(HTTP 400) with a message naming the offending part, *before* anything touches a timeline
or a directory: ids are exactly 32 hex digits, so ``../``, percent-escapes and 31/33-digit
ids never get through.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Final, final

import attrs

from ..core import Lsn, SafekeeperError, TenantId, TenantTimelineId, Term, TimelineId

__all__ = [
    "BadRequest",
    "TimelinePath",
    "check_query",
    "parse_bool",
    "parse_lsn",
    "parse_query",
    "parse_tenant_id",
    "parse_term",
    "parse_timeline_id",
    "parse_timeline_path",
]

_MAX_TARGET: Final = 2048
_MAX_QUERY_FIELDS: Final = 16
_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF


class BadRequest(SafekeeperError):
    """A request target or parameter is malformed (HTTP 400, WebSocket handshake 400)."""

    status = 400


@final
@attrs.frozen
class TimelinePath:
    """``/v1/tenant/{tenant}/timeline/{timeline}[/{action}][?query]``, parsed."""

    ttid: TenantTimelineId
    action: str
    """What follows the timeline id (``"wal_push"``, ``"wal_stream"``, …); ``""`` if nothing."""
    query: Mapping[str, str]


def parse_tenant_id(text: str) -> TenantId:
    try:
        return TenantId.parse(text)
    except ValueError:
        raise BadRequest(f"invalid tenant id {_show(text)}: expected 32 hex digits") from None


def parse_timeline_id(text: str) -> TimelineId:
    try:
        return TimelineId.parse(text)
    except ValueError:
        raise BadRequest(f"invalid timeline id {_show(text)}: expected 32 hex digits") from None


def parse_lsn(text: str, *, name: str = "lsn") -> Lsn:
    """``X/Y`` with two hex u32 parts (no surrounding spaces)."""
    try:
        if text != text.strip():
            raise ValueError(text)
        return Lsn.parse(text)
    except ValueError:
        raise BadRequest(f"invalid {name} {_show(text)}: expected an LSN like 0/16B3748") from None


def parse_term(text: str, *, name: str = "term") -> Term:
    """A decimal u64 (digits only: no sign, spaces or underscores)."""
    if not (0 < len(text) <= 20 and text.isascii() and text.isdigit()) or int(text) > _U64_MAX:
        raise BadRequest(f"invalid {name} {_show(text)}: expected a decimal u64")
    return int(text)


def parse_bool(text: str, *, name: str) -> bool:
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise BadRequest(f"invalid {name} {_show(text)}: expected true or false")


def parse_query(query: str) -> dict[str, str]:
    """``a=1&b=2`` into a dict. Duplicates, escapes and empty names are refused.

    Percent-escapes are refused rather than decoded: none of our parameters needs one, and
    decoding would give path tricks a second chance.
    """
    if not query:
        return {}
    fields = query.split("&")
    if len(fields) > _MAX_QUERY_FIELDS:
        raise BadRequest(f"too many query parameters ({len(fields)})")
    result: dict[str, str] = {}
    for field in fields:
        name, eq, value = field.partition("=")
        if not name or not eq:
            raise BadRequest(f"malformed query parameter {_show(field)}: expected name=value")
        if "%" in field or "+" in field:
            raise BadRequest(f"query parameter {_show(field)} must not contain escapes")
        if name in result:
            raise BadRequest(f"query parameter {_show(name)} given more than once")
        result[name] = value
    return result


def check_query(query: Mapping[str, str], allowed: Collection[str]) -> None:
    """Refuse any parameter not in ``allowed`` (a typo must not be silently ignored)."""
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise BadRequest(
            f"unknown query parameter {_show(unknown[0])} (expected: {expected})"
        )


def parse_timeline_path(target: str) -> TimelinePath:
    """Parse a request target (path plus optional query) naming one timeline.

    Raises :class:`BadRequest` for anything but ``/v1/tenant/<32 hex>/timeline/<32 hex>``
    optionally followed by ``/<action>`` (one segment of ``[a-z0-9_]``) and a query.
    """
    if len(target) > _MAX_TARGET:
        raise BadRequest(f"request target too long ({len(target)} characters)")
    path, _, query = target.partition("?")
    parts = path.split("/")
    # ["", "v1", "tenant", T, "timeline", L] or the same plus [action]
    if (
        len(parts) not in (6, 7)
        or parts[0] != ""
        or parts[1] != "v1"
        or parts[2] != "tenant"
        or parts[4] != "timeline"
    ):
        raise BadRequest(
            f"invalid path {_show(path)}: expected /v1/tenant/<tenant_id>/timeline/<timeline_id>"
        )
    tenant = parse_tenant_id(parts[3])
    timeline = parse_timeline_id(parts[5])
    action = parts[6] if len(parts) == 7 else ""
    if len(parts) == 7 and not (
        action and action.isascii() and all(c.isalnum() or c == "_" for c in action)
    ):
        raise BadRequest(f"invalid path {_show(path)}: bad endpoint name {_show(action)}")
    return TimelinePath(TenantTimelineId(tenant, timeline), action, parse_query(query))


def _show(text: str) -> str:
    """Quote untrusted text for an error message, cut short."""
    return repr(text if len(text) <= 64 else text[:64] + "…")
