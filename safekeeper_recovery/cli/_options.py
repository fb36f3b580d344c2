"""The command line's vocabulary: one option name, one type and one syntax per concept.

Every command takes a concept under the same name, with the same type (so ``--help``
shows the same metavar) and the same value syntax:

==================  ====================  ==================================================
concept             option                syntax
==================  ====================  ==================================================
a node's id         ``--node-id``         ``NODE_ID``: an unsigned 64-bit integer
a node's HTTP API   ``--node``            ``URL``: ``http(s)://HOST:PORT``; status takes a
                                          comma-separated list
WAL port URLs       ``--safekeepers``     ``ws://HOST:PORT,ws://HOST:PORT,…``
a JWT to send       ``--token-file``      ``FILE`` holding the token
tenant, timeline    ``--tenant-id``,      ``HEX32``: 32 hex digits
                    ``--timeline-id``
a position in WAL   ``--start-lsn`` …     ``LSN``: ``X/Y`` (hex, PostgreSQL's notation)
an amount of WAL    ``--bytes``,          ``SIZE``: ``65536``, ``64KiB``, ``16MiB``, ``1GiB``
                    ``--wal-seg-size``
a time span         ``--*-timeout``,      ``DURATION``: ``5s``, ``500ms``, ``2m``, ``1h`` or a
                    ``--*-interval`` …    bare number of seconds (``1.5``)
log output          ``--log-format``,     one of the listed choices
                    ``--log-level``
a WAL archive       ``--archive``         ``URL``: ``file:///DIR`` or ``s3://BUCKET/PREFIX``
                    ``--archive-endpoint`` ``URL``: an S3-compatible server, ``http(s)://…``
a disk limit        ``--max-disk-usage``  ``SIZE|PERCENT``: ``200GiB``, ``95%`` or ``off``
==================  ====================  ==================================================

Defaults are shown as ``[default: …]`` and mandatory options as ``[required]``, by click,
in every command. Old spellings that scripts may still use (``serve --id``,
``serve --auth-token``, ``sidecar --token``) are hidden aliases that print a deprecation
note on stderr (:func:`deprecated_alias`, resolved by :func:`apply_aliases`).
``tests/test_cli_vocabulary.py`` walks every command and checks this table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from ..core import Lsn, NodeId, TenantId, TimelineId
from ..node import parse_disk_limit, parse_duration
from ..storage import open_archive

__all__ = [
    "ARCHIVE_URL",
    "DISK_LIMIT",
    "DURATION",
    "HTTP_URL",
    "LSN",
    "NODE_ID",
    "SIZE",
    "TENANT_ID",
    "TIMELINE_ID",
    "ArchiveUrlType",
    "DiskLimitType",
    "DurationType",
    "Hex32Type",
    "HttpUrlType",
    "LsnType",
    "UrlListType",
    "apply_aliases",
    "deprecated_alias",
    "format_duration",
    "node_option",
    "parse_size",
    "tenant_timeline_options",
    "timeout_option",
    "token_file_option",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_SIZE_UNITS: Final = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
_U64_MAX: Final = 2**64 - 1


def parse_size(text: str) -> int:
    """``16MiB`` / ``1GiB`` / ``65536`` -> bytes (binary units only: WAL sizes are powers
    of two). Raises ``ValueError``."""
    m = re.fullmatch(r"\s*([0-9]+)\s*([KMG]iB|B)?\s*", text, flags=re.IGNORECASE)
    if m is None:
        raise ValueError(f"expected a size like 16MiB, got {text!r}")
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()]


def format_duration(seconds: float) -> str:
    """The shortest DURATION text for ``seconds`` (``5s``, ``500ms``, ``1.5s``)."""
    if seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


class LsnType(click.ParamType[Lsn]):
    """``X/Y`` LSNs."""

    name = "LSN"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> Lsn:
        if isinstance(value, Lsn):
            return value
        try:
            return Lsn.parse(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


class SizeType(click.ParamType[int]):
    """``SIZE``: bytes with an optional binary unit."""

    name = "SIZE"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


class DurationType(click.ParamType[float]):
    """``DURATION``: seconds, from ``5s``/``500ms``/``2m``/``1h``/``1.5``; positive, or
    zero where ``allow_zero``; at most ``max_seconds`` when given."""

    name = "DURATION"

    def __init__(self, *, allow_zero: bool = False, max_seconds: float | None = None) -> None:
        self.allow_zero = allow_zero
        self.max_seconds = max_seconds

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            if self.allow_zero and str(value).strip() in ("0", "0s", "0ms", "0.0"):
                seconds = 0.0
            else:
                seconds = parse_duration(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)
        if self.max_seconds is not None and seconds > self.max_seconds:
            self.fail(f"at most {format_duration(self.max_seconds)}, got {value!r}", param, ctx)
        return seconds


class NodeIdType(click.ParamType[NodeId]):
    """``NODE_ID``: an unsigned 64-bit integer."""

    name = "NODE_ID"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> NodeId:
        text = str(value).strip()
        if not text.isdigit() or int(text) > _U64_MAX:
            self.fail(f"expected a node id (an integer 0..2^64-1), got {value!r}", param, ctx)
        return NodeId(int(text))


class Hex32Type(click.ParamType[T]):
    """``HEX32``: a tenant or timeline id, 32 hex digits (``parse`` is the id's own)."""

    name = "HEX32"

    def __init__(self, parse: Callable[[str], T]) -> None:
        self.parse = parse

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> T:
        if not isinstance(value, str):
            return value  # type: ignore[return-value]  # already parsed (a default)
        try:
            return self.parse(value.strip())
        except ValueError as e:
            self.fail(str(e), param, ctx)


class ArchiveUrlType(click.ParamType[str]):
    """``URL``: a WAL archive, ``file:///DIR`` or ``s3://BUCKET/PREFIX``."""

    name = "URL"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        text = str(value).strip()
        try:
            open_archive(text)  # checks the form only: opens nothing
        except ValueError as e:
            self.fail(str(e), param, ctx)
        return text


class DiskLimitType(click.ParamType[str]):
    """``SIZE|PERCENT``: a limit of disk usage, ``200GiB``, ``95%`` or ``off`` (checked
    here, passed on as written: the node configuration parses it, rule U1)."""

    name = "SIZE|PERCENT"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        text = str(value).strip()
        try:
            parse_disk_limit(text)
        except ValueError as e:
            self.fail(str(e), param, ctx)
        return text


class HttpUrlType(click.ParamType[str]):
    """``URL``: a node's HTTP API, ``http(s)://HOST:PORT`` (trailing slash dropped)."""

    name = "URL"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        text = str(value).strip()
        if not re.fullmatch(r"https?://[^\s/]+/?", text):
            hint = " (that is a WAL port URL; --node takes the HTTP API)" if text.startswith(
                ("ws://", "wss://")) else ""
            self.fail(f"expected http://HOST:PORT, got {text!r}{hint}", param, ctx)
        return text.rstrip("/")


class UrlListType(click.ParamType[tuple[str, ...]]):
    """A comma-separated list of distinct URLs of one kind: ``http`` (a node's HTTP API)
    or ``ws`` (a WAL port). A URL of the other kind is a usage error naming it."""

    def __init__(self, kind: str) -> None:
        assert kind in ("http", "ws"), kind
        self.kind = kind
        self.name = f"{kind.upper()}_URL[,…]"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        urls = tuple(u.strip().rstrip("/") for u in str(value).split(",") if u.strip())
        if not urls:
            self.fail("list at least one URL", param, ctx)
        if len(set(urls)) != len(urls):
            self.fail("a URL is listed twice", param, ctx)
        pattern = r"wss?://[^\s/]+" if self.kind == "ws" else r"https?://[^\s/]+"
        for url in urls:
            if not re.fullmatch(pattern, url):
                example = "ws://HOST:PORT (a node's WAL port, --listen-wal)" if (
                    self.kind == "ws") else "http://HOST:PORT (a node's HTTP API, --listen-http)"
                self.fail(f"{url!r} is not a {example}", param, ctx)
        return urls


LSN: Final = LsnType()
SIZE: Final = SizeType()
DURATION: Final = DurationType()
NODE_ID: Final = NodeIdType()
TENANT_ID: Final = Hex32Type(TenantId.parse)
TIMELINE_ID: Final = Hex32Type(TimelineId.parse)
HTTP_URL: Final = HttpUrlType()
ARCHIVE_URL: Final = ArchiveUrlType()
DISK_LIMIT: Final = DiskLimitType()


def node_option(help: str = "The node's HTTP API.") -> Callable[[F], F]:
    """``--node URL`` (required)."""
    return click.option("--node", required=True, type=HTTP_URL, help=help)


def tenant_timeline_options(f: F) -> F:
    """``--tenant-id HEX32 --timeline-id HEX32`` (both required)."""
    f = click.option("--timeline-id", required=True, type=TIMELINE_ID,
                     help="The timeline's id (32 hex digits).")(f)
    return click.option("--tenant-id", required=True, type=TENANT_ID,
                        help="The tenant's id (32 hex digits).")(f)


def token_file_option(help: str = "File holding the JWT to send (nodes with auth on).",
                      ) -> Callable[[F], F]:
    """``--token-file FILE`` (must exist)."""
    return click.option(
        "--token-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), help=help,
    )


def timeout_option(default: str = "10s",
                   help: str = "Timeout of each request and connect.") -> Callable[[F], F]:
    """``--timeout DURATION``."""
    return click.option("--timeout", type=DURATION, default=default, show_default=True,
                        help=help)


# ---- deprecated spellings ---------------------------------------------------------------

_ALIASES_KEY: Final = "safekeeper_recovery.aliases"


def deprecated_alias(old: str, new: str, dest: str, **kwargs: Any) -> Callable[[F], F]:
    """A hidden option ``old`` that sets parameter ``dest`` of the option ``new``, with a
    deprecation note; the command resolves it with :func:`apply_aliases`."""

    def remember(ctx: click.Context, _: click.Parameter, value: object) -> None:
        if value is not None:
            ctx.meta.setdefault(_ALIASES_KEY, []).append((old, new, dest, value))

    return click.option(old, f"_alias_{dest}", hidden=True, expose_value=False,
                        callback=remember, **kwargs)


def apply_aliases(ctx: click.Context, params: dict[str, Any]) -> set[str]:
    """Move the values of deprecated spellings into ``params`` (noting each on stderr) and
    return the names of the parameters they set. Raises ``click.UsageError`` when an option
    is given under both spellings."""
    given: set[str] = set()
    for old, new, dest, value in ctx.meta.get(_ALIASES_KEY, []):
        if ctx.get_parameter_source(dest) == click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError(f"{old} is the old name of {new}: give only {new}")
        click.echo(f"Warning: {old} is deprecated, use {new}", err=True)
        params[dest] = value
        given.add(dest)
    return given
