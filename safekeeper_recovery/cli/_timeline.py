"""``timeline create|status|delete`` and ``recovery trigger|cancel``: operate on one
timeline of one node over HTTP (what operators would otherwise do with curl)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click
import trio

from ..core import Lsn, SafekeeperError, TenantId, TenantTimelineId, TimelineId
from ..pgwal import check_start_lsn, validate_seg_size
from ..transport import HttpError, SafekeeperClient
from ._errors import failure, node_error
from ._main import main
from ._options import (
    LSN,
    SIZE,
    node_option,
    tenant_timeline_options,
    timeout_option,
    token_file_option,
)

__all__ = ["recovery", "timeline"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., None])


def _timeline_options(f: F) -> F:
    """The options every command on one timeline of one node takes."""
    for decorator in reversed([
        node_option(),
        tenant_timeline_options,
        token_file_option("File holding a JWT to send (safekeeperdata scope; nodes with "
                          "auth on)."),
        timeout_option(),
    ]):
        f = decorator(f)
    return f


@main.group()
def timeline() -> None:
    """Create, inspect or delete a timeline on one node (prints JSON)."""


@timeline.command()
@_timeline_options
@click.option(
    "--start-lsn", type=LSN, default="0/1000000", show_default=True,
    help="Where the timeline's WAL starts: where a record can start (8-aligned, not inside "
    "a page header); normally a segment start.",
)
@click.option(
    "--wal-seg-size", type=SIZE, default="16MiB", show_default=True,
    help="WAL segment size: a power of two, 1MiB to 1GiB.",
)
def create(
    node: str, tenant_id: TenantId, timeline_id: TimelineId, token_file: Path | None,
    timeout: float, start_lsn: Lsn, wal_seg_size: int,
) -> None:
    """Create a timeline (repeating it with equal parameters is a no-op); print its status."""
    try:
        validate_seg_size(wal_seg_size)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--wal-seg-size") from None
    try:
        check_start_lsn(start_lsn, wal_seg_size)
    except ValueError as e:
        # propose and verify would refuse such a timeline later: say so before it exists.
        raise click.BadParameter(
            f"{e}: no WAL record can start there; use a segment start such as 0/1000000 "
            "(see docs/errors.md#s1)", param_hint="--start-lsn") from None
    ttid = TenantTimelineId(tenant_id, timeline_id)
    _run(node, token_file, timeout, lambda c: c.create_timeline(
        ttid, start_lsn, wal_seg_size=wal_seg_size
    ))


@timeline.command()
@_timeline_options
def status(
    node: str, tenant_id: TenantId, timeline_id: TimelineId, token_file: Path | None,
    timeout: float,
) -> None:
    """Print a timeline's status JSON (term, flush/commit LSNs, peers, recovery)."""
    ttid = TenantTimelineId(tenant_id, timeline_id)
    _run(node, token_file, timeout, lambda c: c.timeline_status(ttid))


@timeline.command()
@_timeline_options
def delete(
    node: str, tenant_id: TenantId, timeline_id: TimelineId, token_file: Path | None,
    timeout: float,
) -> None:
    """Delete a timeline and its data."""
    ttid = TenantTimelineId(tenant_id, timeline_id)

    async def call(client: SafekeeperClient) -> dict[str, object]:
        await client.delete_timeline(ttid)
        return {"deleted": str(ttid)}

    _run(node, token_file, timeout, call)


_RECOVERY_HINTS = {404: "no such timeline on this node, or the node runs with --no-recovery "
                        "(then its sidecar recovers it)"}


@main.group()
def recovery() -> None:
    """Start or stop peer recovery of a timeline on one node (prints JSON)."""


@recovery.command()
@_timeline_options
def trigger(
    node: str, tenant_id: TenantId, timeline_id: TimelineId, token_file: Path | None,
    timeout: float,
) -> None:
    """Make the node re-check the timeline now (pick a donor and recover if it lags)."""
    ttid = TenantTimelineId(tenant_id, timeline_id)

    async def call(client: SafekeeperClient) -> dict[str, object]:
        await client.recovery_trigger(ttid)
        return {"timeline": str(ttid), "recovery": "triggered"}

    _run(node, token_file, timeout, call, hints=_RECOVERY_HINTS)


@recovery.command()
@_timeline_options
def cancel(
    node: str, tenant_id: TenantId, timeline_id: TimelineId, token_file: Path | None,
    timeout: float,
) -> None:
    """End the timeline's current recovery attempt (the supervisor retries after its
    back-off)."""
    ttid = TenantTimelineId(tenant_id, timeline_id)

    async def call(client: SafekeeperClient) -> dict[str, object]:
        await client.recovery_cancel(ttid)
        return {"timeline": str(ttid), "recovery": "cancelled"}

    _run(node, token_file, timeout, call, hints=_RECOVERY_HINTS)


def _run(
    node: str,
    token_file: Path | None,
    timeout: float,
    call: Callable[[SafekeeperClient], Awaitable[T]],
    *,
    hints: dict[int, str] | None = None,
) -> None:
    """Run one request, print its JSON answer; errors become exit code 1 with a message."""
    token = token_file.read_text().strip() if token_file is not None else None

    async def go() -> T:
        async with SafekeeperClient(node, token=token, timeout=timeout) as client:
            return await call(client)

    try:
        answer = trio.run(go)
    except HttpError as e:
        raise failure(node_error(node, e, hints)) from None
    except SafekeeperError as e:
        raise failure(str(e)) from None
    click.echo(json.dumps(answer, indent=2, sort_keys=True))
