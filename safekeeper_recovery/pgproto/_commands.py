"""What a replication client asks for: its startup parameters and its commands, parsed.

Rules
-----
Q1  A connection must ask for physical replication (startup ``replication`` = true, on,
    yes or 1): absent or false is refused with 0A000 (this port serves no SQL sessions),
    ``database`` (logical replication) with 0A000 too.
Q2  The tenant and timeline come from the startup ``options`` as Neon's safekeepers take
    them: ``-c tenant_id=… -c timeline_id=…`` (also ``-ctenant_id=…`` and
    ``--tenant_id=…``; backslash escapes as libpq writes them). Both are required (28000
    naming the missing one); other ``-c`` settings are ignored.
Q3  Commands are PostgreSQL's replication grammar, keywords case-insensitive, an optional
    trailing ``;``: ``IDENTIFY_SYSTEM``, ``SHOW name``, ``READ_REPLICATION_SLOT slot``,
    ``TIMELINE_HISTORY tli``, ``START_REPLICATION [SLOT s] [PHYSICAL] X/Y [TIMELINE tli]``.
    Other replication commands (slots, base backups, logical replication) are 0A000; a
    malformed one is 42601; anything else is SQL, which a physical replication
    connection cannot run (0A000, as PostgreSQL's walsender says).
Q4  LSNs are ``X/Y`` (hex, 64 bits), timelines 1 .. 2^32-1: out of range is 42601.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, final

import attrs

from ..core import Lsn
from ._errors import FEATURE_NOT_SUPPORTED, INVALID_AUTHORIZATION, SYNTAX_ERROR, PgError

__all__ = [
    "IdentifySystem",
    "ReadReplicationSlot",
    "ReplicationCommand",
    "ReplicationStartup",
    "Show",
    "StartReplication",
    "TimelineHistory",
    "parse_command",
    "parse_startup",
    "split_options",
]

_TRUE: Final = frozenset({"true", "on", "yes", "1"})
_FALSE: Final = frozenset({"false", "off", "no", "0"})


@final
@attrs.frozen
class ReplicationStartup:
    """A physical replication connection's startup parameters (Q1, Q2)."""

    tenant_id: str
    timeline_id: str
    application_name: str
    user: str


def split_options(options: str) -> list[str]:
    """Split a startup ``options`` string as the server does: on unescaped whitespace, a
    backslash taking the next character literally."""
    words: list[str] = []
    word: list[str] = []
    started = False
    chars = iter(options)
    for ch in chars:
        if ch == "\\":
            word.append(next(chars, ""))
            started = True
        elif ch.isspace():
            if started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(ch)
            started = True
    if started:
        words.append("".join(word))
    return words


def _settings(options: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    words = split_options(options)
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "-c":
            if i >= len(words):
                raise PgError(INVALID_AUTHORIZATION, "options: -c without a name=value",
                              fatal=True)
            setting = words[i]
            i += 1
        elif word.startswith("-c"):
            setting = word[2:]
        elif word.startswith("--"):
            setting = word[2:].replace("-", "_") if "=" in word else word[2:]
        else:
            continue  # other server switches mean nothing here
        name, eq, value = setting.partition("=")
        if not eq:
            raise PgError(INVALID_AUTHORIZATION,
                          f"options: {setting!r} is not name=value (write -c name=value)",
                          fatal=True)
        settings[name.strip().lower()] = value
    return settings


def parse_startup(params: Mapping[str, str]) -> ReplicationStartup:
    """Check the startup parameters (Q1, Q2); :class:`PgError` (fatal) otherwise."""
    replication = params.get("replication", "").strip().lower()
    if replication == "database":
        raise PgError(FEATURE_NOT_SUPPORTED,
                      "logical replication is not supported: a safekeeper serves physical "
                      "replication only (connect with replication=true)", fatal=True)
    if replication not in _TRUE:
        shown = "absent" if replication == "" else f"{params['replication']!r}"
        raise PgError(FEATURE_NOT_SUPPORTED,
                      f"this is a safekeeper's replication port; it runs no SQL sessions: "
                      f"connect with replication=true (physical replication), not "
                      f"replication {shown}", fatal=True)
    settings = _settings(params.get("options", ""))
    missing = [name for name in ("tenant_id", "timeline_id") if not settings.get(name)]
    if missing:
        raise PgError(INVALID_AUTHORIZATION,
                      f"no {' and no '.join(missing)} in the startup options: connect with "
                      "options='-c tenant_id=<hex> -c timeline_id=<hex>'", fatal=True)
    return ReplicationStartup(settings["tenant_id"], settings["timeline_id"],
                              params.get("application_name", ""), params.get("user", ""))


# ---- commands (Q3, Q4) ------------------------------------------------------------------

@final
@attrs.frozen
class IdentifySystem:
    pass


@final
@attrs.frozen
class Show:
    name: str


@final
@attrs.frozen
class ReadReplicationSlot:
    slot: str


@final
@attrs.frozen
class TimelineHistory:
    timeline: int


@final
@attrs.frozen
class StartReplication:
    slot: str | None
    start: Lsn
    timeline: int | None


ReplicationCommand = (
    IdentifySystem | Show | ReadReplicationSlot | TimelineHistory | StartReplication
)

_TOKEN = re.compile(r"""\s*(?:("(?:[^"]|"")*")|('(?:[^']|'')*')|([^\s(),;="']+)|([(),;=]))""")
_UNSUPPORTED: Final = frozenset({
    "CREATE_REPLICATION_SLOT", "DROP_REPLICATION_SLOT", "ALTER_REPLICATION_SLOT",
    "BASE_BACKUP", "UPLOAD_MANIFEST",
})
_MAX_TLI: Final = 2**32 - 1


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise PgError(SYNTAX_ERROR, f"syntax error at or near {text[pos:pos + 20]!r}")
        out.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
    if out and out[-1] == ";":
        out.pop()
    return out


def _ident(token: str) -> str:
    if token.startswith('"'):
        return token[1:-1].replace('""', '"')
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", token):
        raise PgError(SYNTAX_ERROR, f"syntax error at or near {token!r}: expected a name")
    return token.lower()


def _lsn(token: str) -> Lsn:
    if not re.fullmatch(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}", token):
        raise PgError(SYNTAX_ERROR, f"invalid LSN {token!r}: expected X/Y in hexadecimal")
    return Lsn.parse(token)


def _tli(token: str) -> int:
    if not token.isdigit() or not 1 <= int(token) <= _MAX_TLI:
        raise PgError(SYNTAX_ERROR, f"invalid timeline {token!r}: expected 1 .. {_MAX_TLI}")
    return int(token)


def parse_command(text: str) -> ReplicationCommand | None:
    """Parse one simple-query text (Q3, Q4). ``None`` for an empty query; :class:`PgError`
    (an ERROR, not fatal) for anything it cannot serve."""
    tokens = _tokens(text)
    if not tokens:
        return None
    head = tokens[0].upper()
    args = tokens[1:]

    def arity(n: int, usage: str) -> None:
        if len(args) != n:
            raise PgError(SYNTAX_ERROR, f"syntax error in {head}: usage {usage}")

    match head:
        case "IDENTIFY_SYSTEM":
            arity(0, "IDENTIFY_SYSTEM")
            return IdentifySystem()
        case "SHOW":
            arity(1, "SHOW name")
            return Show(_ident(args[0]))
        case "READ_REPLICATION_SLOT":
            arity(1, "READ_REPLICATION_SLOT slot_name")
            return ReadReplicationSlot(_ident(args[0]))
        case "TIMELINE_HISTORY":
            arity(1, "TIMELINE_HISTORY tli")
            return TimelineHistory(_tli(args[0]))
        case "START_REPLICATION":
            return _start_replication(args)
    if head in _UNSUPPORTED:
        raise PgError(FEATURE_NOT_SUPPORTED,
                      f"{head} is not supported by a safekeeper: it serves physical "
                      "replication of the WAL it holds (IDENTIFY_SYSTEM, SHOW, "
                      "READ_REPLICATION_SLOT, TIMELINE_HISTORY, START_REPLICATION)")
    raise PgError(FEATURE_NOT_SUPPORTED,
                  "cannot execute SQL commands in WAL sender for physical replication: "
                  "this safekeeper port understands IDENTIFY_SYSTEM, SHOW, "
                  "READ_REPLICATION_SLOT, TIMELINE_HISTORY and START_REPLICATION")


def _start_replication(args: list[str]) -> StartReplication:
    usage = "START_REPLICATION [SLOT slot_name] [PHYSICAL] X/Y [TIMELINE tli]"
    slot: str | None = None
    rest = list(args)
    if rest[:1] and rest[0].upper() == "SLOT":
        if len(rest) < 2:
            raise PgError(SYNTAX_ERROR, f"syntax error: usage {usage}")
        slot = _ident(rest[1])
        rest = rest[2:]
    if rest[:1] and rest[0].upper() == "LOGICAL":
        raise PgError(FEATURE_NOT_SUPPORTED,
                      "logical replication is not supported by a safekeeper: use PHYSICAL")
    if rest[:1] and rest[0].upper() == "PHYSICAL":
        rest = rest[1:]
    if not rest:
        raise PgError(SYNTAX_ERROR, f"syntax error: usage {usage}")
    start = _lsn(rest[0])
    rest = rest[1:]
    timeline: int | None = None
    if rest[:1] and rest[0].upper() == "TIMELINE":
        if len(rest) < 2:
            raise PgError(SYNTAX_ERROR, f"syntax error: usage {usage}")
        timeline = _tli(rest[1])
        rest = rest[2:]
    if rest:
        raise PgError(SYNTAX_ERROR,
                      f"syntax error at or near {rest[0]!r}: usage {usage}")
    return StartReplication(slot, start, timeline)
