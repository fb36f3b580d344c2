"""``status``: one view of a cluster: every node, its timelines, flush/commit, lag, recovery.

:func:`gather_cluster_status` asks every node (concurrently, each request bounded by
``timeout``) for ``/v1/status``, ``/v1/timelines`` and each timeline's status, and returns
a :class:`ClusterStatus`; a node that does not answer is recorded as down with the reason,
once, and its flush is shown as ``-``. ``lag`` is how far a node's flush_lsn is behind the
most advanced flush_lsn among the nodes that answered for that timeline.

:func:`render_recovery` shows what recovers now: a progress bar per recovering (or queued)
timeline with its rate and ETA, and each node's total; ``status --watch`` redraws it all
every ``--watch-interval``.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Final

import attrs
import click
import trio
from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from .._console import format_bytes, make_console
from ..core import Lsn, TenantId, TenantTimelineId, TimelineId
from ..recovery import iso_time
from ..transport import HttpError, SafekeeperClient
from ._errors import node_error
from ._main import main
from ._options import DURATION, UrlListType, timeout_option, token_file_option

__all__ = ["ClusterStatus", "NodeView", "TimelineView", "gather_cluster_status",
           "render_recovery"]

_PER_NODE_REQUESTS: Final = 8
"""Timeline status requests in flight per node (thousands of timelines stay bounded)."""


@attrs.define
class TimelineView:
    """One timeline as one node reports it."""

    ttid: TenantTimelineId
    node: str
    state: str
    """``ok``, ``broken`` or ``missing`` (the node answered but lacks the timeline)."""
    term: int | None = None
    last_log_term: int | None = None
    flush_lsn: Lsn | None = None
    commit_lsn: Lsn | None = None
    lag_bytes: int | None = None
    recovery: dict[str, object] = attrs.Factory(dict)
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "node": self.node,
            "state": self.state,
            "term": self.term,
            "last_log_term": self.last_log_term,
            "flush_lsn": None if self.flush_lsn is None else str(self.flush_lsn),
            "commit_lsn": None if self.commit_lsn is None else str(self.commit_lsn),
            "lag_bytes": self.lag_bytes,
            "recovery": self.recovery,
            "error": self.error,
        }


@attrs.define
class NodeView:
    url: str
    up: bool
    node_id: int | None = None
    version: str | None = None
    timeline_count: int | None = None
    broken_count: int | None = None
    error: str | None = None
    recovery: dict[str, object] | None = None
    """Node-wide recovery progress (``/v1/status``'s ``recovery``)."""
    disk: dict[str, object] | None = None
    """The node's disk guard (``/v1/status``'s ``disk``): usage, limit, ``refusing``."""

    def to_json(self) -> dict[str, object]:
        return attrs.asdict(self)

    @property
    def disk_text(self) -> str:
        """``51% of 252.0GiB``, or why new WAL is refused."""
        disk = self.disk or {}
        if disk.get("refusing"):
            return f"REFUSING WAL: {disk['refusing']}"
        size, used = disk.get("fs_size_bytes"), disk.get("fs_used_bytes")
        if not isinstance(size, int) or not isinstance(used, int) or size <= 0:
            return "-"
        return f"{100 * used / size:.0f}% of {format_bytes(size)}"


@attrs.define
class ClusterStatus:
    """What :func:`gather_cluster_status` found; ``at`` is Unix seconds."""

    at: float
    nodes: list[NodeView]
    timelines: dict[TenantTimelineId, list[TimelineView]]

    def to_json(self) -> dict[str, object]:
        return {
            "at": self.at,
            "at_iso": iso_time(self.at),
            "nodes": [n.to_json() for n in self.nodes],
            "timelines": [
                {"tenant_id": str(ttid.tenant_id), "timeline_id": str(ttid.timeline_id),
                 "nodes": [v.to_json() for v in views]}
                for ttid, views in sorted(self.timelines.items())
            ],
        }


async def gather_cluster_status(
    nodes: tuple[str, ...], *, token: str | None = None, timeout: float = 10.0
) -> ClusterStatus:
    """Ask every node in ``nodes`` (HTTP API URLs) for its view; never raises for a node
    that is down or refuses (it is reported in the result)."""
    views: dict[str, NodeView] = {}
    per_node: dict[str, dict[TenantTimelineId, TimelineView]] = {}

    async def one(url: str) -> None:
        async with SafekeeperClient(url, token=token, timeout=timeout) as client:
            try:
                status = await client.status()
                listing = await client.timelines()
            except HttpError as e:
                views[url] = NodeView(url, up=False, error=node_error(url, e))
                return
            views[url] = NodeView(
                url, up=True, node_id=_int(status.get("node_id")),
                version=str(status.get("version")), timeline_count=len(listing),
                broken_count=_int(status.get("broken_count")),
                recovery=_progress(status.get("recovery")),
                disk=disk if isinstance(disk := status.get("disk"), dict) else None,
            )
            found: dict[TenantTimelineId, TimelineView] = {}
            limiter = trio.CapacityLimiter(_PER_NODE_REQUESTS)

            async def timeline(entry: dict[str, object]) -> None:
                ttid = TenantTimelineId(TenantId.parse(str(entry["tenant_id"])),
                                        TimelineId.parse(str(entry["timeline_id"])))
                async with limiter:
                    try:
                        doc = await client.timeline_status(ttid)
                    except HttpError as e:
                        found[ttid] = TimelineView(ttid, url, "missing" if e.status == 404
                                                   else "error", error=str(e))
                        return
                found[ttid] = _timeline_view(ttid, url, doc)

            async with trio.open_nursery() as nursery:
                for entry in listing:
                    nursery.start_soon(timeline, entry)
            per_node[url] = found

    async with trio.open_nursery() as nursery:
        for url in nodes:
            nursery.start_soon(one, url)

    all_ttids = sorted({t for found in per_node.values() for t in found})
    timelines: dict[TenantTimelineId, list[TimelineView]] = {}
    for ttid in all_ttids:
        row: list[TimelineView] = []
        for url in nodes:
            if not views[url].up:
                row.append(TimelineView(ttid, url, "down", error=views[url].error))
            else:
                row.append(per_node[url].get(ttid) or TimelineView(ttid, url, "missing"))
        flushes = [int(v.flush_lsn) for v in row if v.flush_lsn is not None]
        for v in row:
            if v.flush_lsn is not None:
                v.lag_bytes = max(flushes) - int(v.flush_lsn)
        timelines[ttid] = row
    return ClusterStatus(time.time(), [views[u] for u in nodes], timelines)


def _progress(value: object) -> dict[str, object] | None:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _lsn(value: object) -> Lsn | None:
    try:
        return Lsn.parse(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _timeline_view(ttid: TenantTimelineId, url: str, doc: dict[str, object]) -> TimelineView:
    acceptor = doc.get("acceptor_state")
    recovery = doc.get("recovery")
    return TimelineView(
        ttid, url, "broken" if doc.get("broken") else "ok",
        term=_int(acceptor.get("term")) if isinstance(acceptor, dict) else None,
        last_log_term=_int(doc.get("last_log_term")),
        flush_lsn=_lsn(doc.get("flush_lsn")),
        commit_lsn=_lsn(doc.get("commit_lsn")),
        recovery=dict(recovery) if isinstance(recovery, dict) else {},
        error=str(doc["broken"]) if doc.get("broken") else None,
    )


def _recovery_text(view: TimelineView) -> str:
    state = str(view.recovery.get("state", "-"))
    if state == "recovering":
        donor, lag = view.recovery.get("donor"), view.recovery.get("lag_bytes")
        behind = f", {format_bytes(lag)} to go" if isinstance(lag, int) else ""
        return f"recovering from {donor}{behind}"
    if state == "backoff" and view.recovery.get("last_error"):
        return f"backoff ({view.recovery['last_error']})"
    if state == "paused" and view.recovery.get("paused"):
        return f"paused ({view.recovery['paused']})"
    return state


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _eta(value: object) -> str:
    seconds = _number(value)
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def _rate(value: object) -> str:
    rate = _number(value)
    return "-" if rate is None else f"{format_bytes(rate)}/s"


def _lsn_span(recovery: dict[str, object]) -> tuple[int, int] | None:
    """(bytes done, bytes in all) of the current attempt, from its LSNs."""
    start, target, flushed = (_lsn(recovery.get(k)) for k in
                              ("start_lsn", "target_lsn", "flushed_lsn"))
    if start is None or target is None or flushed is None:
        return None
    total = max(0, int(target) - int(start))
    return min(total, max(0, int(flushed) - int(start))), total


def render_recovery(status: ClusterStatus) -> Table | None:
    """Recovering and queued timelines with a progress bar each, then every node's total;
    ``None`` when nothing recovers or waits anywhere."""
    rows = [v for views in status.timelines.values() for v in views
            if v.recovery.get("state") in ("recovering", "waiting")]
    totals = [n for n in status.nodes if n.recovery is not None
              and (n.recovery.get("recovering") or n.recovery.get("waiting"))]
    if not rows and not totals:
        return None
    ids = {n.url: str(n.node_id) if n.node_id is not None else "?" for n in status.nodes}
    table = Table(title="recovery", title_justify="left")
    for name in ("node", "timeline", "state", "donor", "progress", "done", "to go", "rate",
                 "eta"):
        table.add_column(name, no_wrap=True)
    for v in sorted(rows, key=lambda v: (v.node, v.ttid)):
        r = v.recovery
        span = _lsn_span(r)
        bar: ProgressBar | str = "-"
        done = "-"
        if span is not None and r.get("state") == "recovering":
            completed, total = span
            bar = ProgressBar(total=max(total, 1), completed=completed, width=30)
            done = f"{format_bytes(completed)} / {format_bytes(total)}"
        state = str(r.get("state"))
        if state == "waiting" and r.get("queue_position") is not None:
            state = f"waiting #{r['queue_position']}"
        if r.get("quorum_at_risk"):
            state += " (quorum at risk)"
        lag = _number(r.get("lag_bytes"))
        table.add_row(
            ids[v.node], str(v.ttid.timeline_id), state, str(r.get("donor") or "-"), bar, done,
            "-" if lag is None else format_bytes(lag), _rate(r.get("rate_bytes_per_second")),
            _eta(r.get("eta_seconds")),
        )
    for n in totals:
        assert n.recovery is not None
        p = n.recovery
        lag = _number(p.get("lag_bytes"))
        table.add_row(
            ids[n.url], "node total",
            f"{p.get('recovering', 0)} recovering, {p.get('waiting', 0)} waiting", "-", "",
            "", "-" if lag is None else format_bytes(lag),
            _rate(p.get("rate_bytes_per_second")), _eta(p.get("eta_seconds")),
            end_section=True,
        )
    return table


def render_table(status: ClusterStatus) -> Table:
    """The cluster as a rich table: one row per (timeline, node), down nodes included."""
    table = Table(title=f"cluster status at {iso_time(status.at)}", title_justify="left")
    for name in ("tenant", "timeline", "node", "state", "term", "flush_lsn", "commit_lsn",
                 "lag", "recovery"):
        table.add_column(name, no_wrap=name in ("tenant", "timeline"))
    ids = {n.url: str(n.node_id) if n.node_id is not None else "?" for n in status.nodes}
    for ttid, views in sorted(status.timelines.items()):
        for v in views:
            table.add_row(
                str(ttid.tenant_id), str(ttid.timeline_id), f"{ids[v.node]} {v.node}",
                v.state, "-" if v.term is None else str(v.term),
                "-" if v.flush_lsn is None else str(v.flush_lsn),
                "-" if v.commit_lsn is None else str(v.commit_lsn),
                "-" if v.lag_bytes is None else format_bytes(v.lag_bytes),
                "-" if v.state in ("down", "missing") else _recovery_text(v),
            )
    return table


def _render_nodes(status: ClusterStatus) -> Table:
    table = Table(title="nodes", title_justify="left")
    for name in ("node", "url", "state", "timelines", "broken", "disk", "version"):
        table.add_column(name)
    for n in status.nodes:
        table.add_row("?" if n.node_id is None else str(n.node_id), n.url,
                      "up" if n.up else "down",
                      "-" if n.timeline_count is None else str(n.timeline_count),
                      "-" if n.broken_count is None else str(n.broken_count),
                      n.disk_text, n.version or "-")
    return table


def _render_all(status: ClusterStatus) -> Group:
    parts: list[Table | str] = [_render_nodes(status)]
    if status.timelines:
        parts.append(render_table(status))
    recovery = render_recovery(status)
    if recovery is not None:
        parts.append(recovery)
    parts += [f"node down: {n.error}" for n in status.nodes if n.error is not None]
    return Group(*parts)


async def _watch(nodes: tuple[str, ...], token: str | None, timeout: float, interval: float,
                 as_json: bool) -> None:
    """Redraw (or print a JSON line) every ``interval`` until interrupted."""
    console = make_console()
    if as_json:
        while True:
            status = await gather_cluster_status(nodes, token=token, timeout=timeout)
            click.echo(json.dumps(status.to_json(), sort_keys=True), nl=True)
            await trio.sleep(interval)
    status = await gather_cluster_status(nodes, token=token, timeout=timeout)
    with Live(_render_all(status), console=console, auto_refresh=False) as live:
        while True:
            await trio.sleep(interval)
            status = await gather_cluster_status(nodes, token=token, timeout=timeout)
            live.update(_render_all(status), refresh=True)


@main.command("status")
@click.option("--node", "nodes", required=True, type=UrlListType("http"),
              help="The nodes' HTTP APIs, comma-separated: http://HOST:PORT,http://HOST:PORT.")
@token_file_option("File holding a JWT to send (safekeeperdata scope; nodes with auth on).")
@timeout_option()
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON instead of tables (with --watch: one document per line).")
@click.option("--watch", is_flag=True,
              help="Keep redrawing (progress bars of recovering timelines, node totals) "
                   "until Ctrl-C.")
@click.option("--watch-interval", type=DURATION, default="2s", show_default=True,
              help="How often --watch asks the nodes again.")
def status_command(nodes: tuple[str, ...], token_file: Path | None, timeout: float,
                   as_json: bool, watch: bool, watch_interval: float) -> None:
    """Show every node of a cluster, its timelines (flush and commit LSN, lag behind the
    most advanced node) and their recovery state; what recovers now, with a progress bar,
    rate and ETA per timeline and each node's total. Lag is in binary units (KiB, MiB,
    GiB).

    Exit status: 0 every node answered, 1 a node is down (it is listed, with why); with
    --watch, 0 when interrupted.
    """
    token = token_file.read_text().strip() if token_file is not None else None
    if watch:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a watch ends
            trio.run(_watch, nodes, token, timeout, watch_interval, as_json)
        return
    status = trio.run(lambda: gather_cluster_status(nodes, token=token, timeout=timeout))
    if as_json:
        click.echo(json.dumps(status.to_json(), indent=2, sort_keys=True))
    else:
        make_console().print(_render_all(status))
    down = [n for n in status.nodes if not n.up]
    if down:
        raise SystemExit(1)
