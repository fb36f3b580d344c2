"""``timeline pull``: make a node pull a timeline from its peers, and watch it happen.

The command asks the node (``POST …/pull``; if a pull of the timeline runs there already,
the node refuses a second one and the command follows the running one), then polls the
pull's status (``GET …/pull``) five times a second, showing a progress bar of the WAL
bytes received on stderr, and prints the final status JSON. Exit 0 when the timeline was
pulled or was there already (``"state": "exists"``), 1 when the pull failed (its
``last_error`` is in the message).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import trio
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from .._console import BinaryRateColumn, make_console
from ..core import SafekeeperError, TenantId, TenantTimelineId, TimelineId
from ..transport import HttpError, SafekeeperClient
from ._errors import failure, node_error
from ._options import SIZE, UrlListType
from ._timeline import _timeline_options, timeline

__all__ = ["pull"]

_POLL = 0.2
_HINTS = {404: "no such timeline on the peers, or the node does not pull timelines"}


@timeline.command()
@_timeline_options
@click.option("--from", "sources", type=UrlListType("http"), required=True,
              help="The peers to pull from (their HTTP APIs, comma-separated): the most "
                   "advanced by (last_log_term, flush_lsn) is the donor; one may be down.")
@click.option("--rate", type=SIZE, default=None,
              help="Pull at most this many bytes per second (default: as fast as it goes).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar on stderr (default: when stderr is a terminal).")
def pull(
    node: str, tenant_id: TenantId, timeline_id: TimelineId, token_file: Path | None,
    timeout: float, sources: tuple[str, ...], rate: int | None, progress: bool | None,
) -> None:
    """Make the node pull a timeline it lacks from its peers (a node on a new disk, a new
    node); then ordinary peer recovery catches it up. A no-op if it has the timeline."""
    ttid = TenantTimelineId(tenant_id, timeline_id)
    token = token_file.read_text().strip() if token_file is not None else None
    console = make_console(stderr=True)
    show = console.is_terminal if progress is None else progress
    columns = (TextColumn("[bold]pulling"), BarColumn(), DownloadColumn(binary_units=True),
               BinaryRateColumn(), TimeRemainingColumn(), TextColumn("{task.description}"))

    async def go(bar: Progress) -> dict[str, object]:
        task = bar.add_task("", total=None)
        async with SafekeeperClient(node, token=token, timeout=timeout) as client:
            try:
                status = await client.pull(ttid, list(sources), max_rate=rate)
            except HttpError as e:
                if e.status != 409:
                    raise
                # Started by someone else (--pull-missing-timelines, another operator):
                # the node refuses a second pull; follow the one that runs.
                console.print(f"{node}: {e.message}; following that pull")
                status = await client.pull_status(ttid)
            while status.get("state") not in ("done", "exists", "failed"):
                done, total = status.get("bytes"), status.get("total_bytes")
                bar.update(task, completed=done if isinstance(done, int) else 0,
                           total=total if isinstance(total, int) else None,
                           description=f"{status.get('state')} {status.get('donor') or ''}")
                await trio.sleep(_POLL)
                status = await client.pull_status(ttid)
            if status.get("state") == "done":
                done = status.get("bytes")
                bar.update(task, completed=done if isinstance(done, int) else 0,
                           total=done if isinstance(done, int) else None, description="done")
            return status

    with Progress(*columns, console=console, disable=not show) as bar:
        try:
            answer = trio.run(go, bar)
        except HttpError as e:
            raise failure(node_error(node, e, _HINTS)) from None
        except SafekeeperError as e:
            raise failure(str(e)) from None
    click.echo(json.dumps(answer, indent=2, sort_keys=True))
    if answer.get("state") == "failed":
        raise failure(f"{node}: pull of {ttid} failed after {answer.get('attempts')} "
                      f"attempts: {answer.get('last_error')}; check that a peer in --from "
                      "has the timeline (`timeline status --node PEER`) and is reachable")
