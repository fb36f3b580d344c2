"""``timeline create|status|delete``: operate on one timeline of one node over HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click
import trio

from ..core import Lsn, SafekeeperError, TenantId, TenantTimelineId, TimelineId
from ..transport._http_client import HttpError, SafekeeperClient
from ._main import main

__all__ = ["parse_size", "timeline"]

T = TypeVar("T")

_SIZE_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


def parse_size(text: str) -> int:
    """``16MiB`` / ``1GiB`` / ``65536`` -> bytes (binary units only: WAL sizes are powers
    of two). Raises ``ValueError``."""
    m = re.fullmatch(r"\s*([0-9]+)\s*([KMG]iB|B)?\s*", text, flags=re.IGNORECASE)
    if m is None:
        raise ValueError(f"expected a size like 16MiB, got {text!r}")
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()]


class LsnType(click.ParamType[Lsn]):
    """A click option type for ``X/Y`` LSNs (one for every command: ``LSN``)."""

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


LSN = LsnType()


class _Size(click.ParamType[int]):
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


def _timeline_options(f: Callable[..., None]) -> Callable[..., None]:
    for decorator in reversed(
        [
            click.option("--node", required=True, help="The node's HTTP URL, http://HOST:PORT."),
            click.option("--tenant-id", required=True, help="32 hex digits."),
            click.option("--timeline-id", required=True, help="32 hex digits."),
            click.option(
                "--token-file",
                type=click.Path(dir_okay=False, exists=True, path_type=Path),
                help="File holding a JWT to send (when the node has auth on).",
            ),
            click.option("--timeout", default=10.0, show_default=True, help="Seconds per request."),
        ]
    ):
        f = decorator(f)
    return f


@main.group()
def timeline() -> None:
    """Create, inspect or delete a timeline on one node (prints JSON)."""


@timeline.command()
@_timeline_options
@click.option(
    "--start-lsn", type=LSN, default="0/1000000", show_default=True,
    help="Where the timeline's WAL starts (X/Y).",
)
@click.option(
    "--wal-seg-size", type=_Size(), default="16MiB", show_default=True,
    help="WAL segment size: a power of two, 1MiB to 1GiB.",
)
def create(
    node: str, tenant_id: str, timeline_id: str, token_file: Path | None, timeout: float,
    start_lsn: Lsn, wal_seg_size: int,
) -> None:
    """Create a timeline (repeating it with equal parameters is a no-op); print its status."""
    ttid = _ttid(tenant_id, timeline_id)
    _run(node, token_file, timeout, lambda c: c.create_timeline(
        ttid, start_lsn, wal_seg_size=wal_seg_size
    ))


@timeline.command()
@_timeline_options
def status(
    node: str, tenant_id: str, timeline_id: str, token_file: Path | None, timeout: float
) -> None:
    """Print a timeline's status JSON."""
    ttid = _ttid(tenant_id, timeline_id)
    _run(node, token_file, timeout, lambda c: c.timeline_status(ttid))


@timeline.command()
@_timeline_options
def delete(
    node: str, tenant_id: str, timeline_id: str, token_file: Path | None, timeout: float
) -> None:
    """Delete a timeline and its data."""
    ttid = _ttid(tenant_id, timeline_id)

    async def call(client: SafekeeperClient) -> dict[str, object]:
        await client.delete_timeline(ttid)
        return {"deleted": str(ttid)}

    _run(node, token_file, timeout, call)


def _ttid(tenant_id: str, timeline_id: str) -> TenantTimelineId:
    try:
        tenant = TenantId.parse(tenant_id)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--tenant-id") from None
    try:
        tl = TimelineId.parse(timeline_id)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--timeline-id") from None
    return TenantTimelineId(tenant, tl)


def _run(
    node: str,
    token_file: Path | None,
    timeout: float,
    call: Callable[[SafekeeperClient], Awaitable[T]],
) -> None:
    """Run one request, print its JSON answer; errors become exit code 1 with a message."""
    token = token_file.read_text().strip() if token_file is not None else None

    async def go() -> T:
        async with SafekeeperClient(node, token=token, timeout=timeout) as client:
            return await call(client)

    try:
        answer = trio.run(go)
    except HttpError as e:
        raise click.ClickException(f"{node}: {e}") from None
    except SafekeeperError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(answer, indent=2, sort_keys=True))
