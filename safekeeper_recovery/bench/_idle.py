"""Idle cost at scale: one node with many timelines, recovery on, nothing to do.

Node 1 gets ``count`` timelines pre-created in its data dir through the storage layer
(``FileBackend.create``, as the HTTP create would, minus the round trips) and one real,
empty peer (node 2) so peer pushes succeed as in a cluster. Measured: start-up (spawn →
ready file), CPU of node 1 over a window (utime+stime from /proc), RSS per timeline (node 1
minus the empty node 2), and the time for one peer-info batch naming every timeline to
wake all of them: the batch brings news (a new peer, node 3, at the timelines' own
position, so not a donor and no attempt follows) and the clock stops when the node's
``safekeeper_recovery_evaluations_total{cause="change"}`` counter has grown by the number of
timelines, i.e. every supervisor has re-run donor selection because of it (checked
afterwards: every timeline's ``why_no_donor`` names sk 3).
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import trio
from rich.console import Console

from ..core import (
    NodeId,
    PersistentState,
    ServerInfo,
    TenantId,
    TenantTimelineId,
    Term,
    TimelineId,
    encode_state,
)
from ..testing import Cluster, allocate_ports
from ..timeline import FileBackend
from ..transport import HttpError, PeerInfoBatch, PeerTimelineInfo, SafekeeperClient
from ._cluster import START_LSN, cpu_seconds, rss

__all__ = ["IdleResult", "cpu_seconds", "measure_idle", "precreate"]

SEG_SIZE = 16 * 1024 * 1024
SETTLE = 3.0
"""Seconds after start-up before the CPU window opens (load-time work is start-up's)."""


@attrs.frozen
class IdleResult:
    timelines: int
    create_seconds: float
    startup_seconds: float
    window: float
    cpu_percent: float
    rss_bytes: int
    rss_empty_bytes: int
    wake_seconds: float | None
    wake_error: str | None = None

    @property
    def rss_per_timeline(self) -> float:
        return (self.rss_bytes - self.rss_empty_bytes) / self.timelines


def precreate(data_dir: Path, ttids: list[TenantTimelineId], seg_size: int = SEG_SIZE) -> None:
    """Create ``ttids`` (empty, at ``START_LSN``) in a stopped node's ``data_dir`` through
    the storage layer, as the HTTP create would. Blocking: call it from a thread."""
    backend = FileBackend(data_dir)

    def one(ttid: TenantTimelineId) -> None:
        state = PersistentState.new_timeline(
            ttid.tenant_id, ttid.timeline_id, START_LSN, ServerInfo(0, 0, seg_size)
        )
        store, _control = backend.create(ttid, seg_size, START_LSN, encode_state(state))
        store.close()

    # fsync-bound: a few threads overlap the waits.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, ttids))


async def measure_idle(root: Path, count: int, window: float, console: Console
                       ) -> IdleResult:
    cluster = Cluster(root, 2, peer_timing=(), ready_timeout=30.0)
    node, peer = cluster[1], cluster[2]
    # Few tenants with many timelines each, like a real deployment's directory fan-out.
    tenants = [TenantId(os.urandom(16)) for _ in range(max(1, count // 100))]
    ttids = [TenantTimelineId(tenants[i % len(tenants)], TimelineId(os.urandom(16)))
             for i in range(count)]
    try:
        t0 = time.perf_counter()
        await trio.to_thread.run_sync(precreate, node.work_dir / "data", ttids)
        create_seconds = time.perf_counter() - t0
        console.print(f"    pre-created {count} timelines in {create_seconds:.1f} s")
        await peer.start()
        t0 = time.perf_counter()
        await node.start(timeout=300.0)
        startup = time.perf_counter() - t0
        assert node.process is not None
        assert peer.process is not None
        await trio.sleep(SETTLE)  # a measurement window, not a wait for a condition
        cpu0, w0 = cpu_seconds(node.process.pid), time.perf_counter()
        await trio.sleep(window)
        cpu1, w1 = cpu_seconds(node.process.pid), time.perf_counter()
        node_rss, empty_rss = rss(node.process.pid), rss(peer.process.pid)
        wake, error = None, None
        try:
            wake = await _wake_all(node.http_url, ttids)
        except (trio.TooSlowError, OSError, ValueError, HttpError) as e:
            error = f"{type(e).__name__}: {e}"
        return IdleResult(count, create_seconds, startup, w1 - w0,
                          100.0 * (cpu1 - cpu0) / (w1 - w0), node_rss, empty_rss, wake, error)
    finally:
        with trio.CancelScope(shield=True):
            await cluster.aclose()


WAKE_POLL = 0.1
"""Metrics polling period while waiting for the wake-all (a scrape walks every timeline)."""
_CHANGE_EVALUATIONS = re.compile(
    r'^safekeeper_recovery_evaluations_total\{cause="change"\} ([0-9.e+]+)$', re.MULTILINE
)


def _change_evaluations(metrics_text: str) -> int:
    m = _CHANGE_EVALUATIONS.search(metrics_text)
    return 0 if m is None else int(float(m.group(1)))


async def _wake_all(http_url: str, ttids: list[TenantTimelineId], timeout: float = 60.0
                    ) -> float:
    """POST one batch naming every timeline with news that makes no donor; seconds until
    every supervisor re-ran donor selection because of a change (see the module
    docstring; ``WAKE_POLL`` resolution). ``ValueError`` if not within ``timeout`` or if
    afterwards some timeline's selection did not see the new peer."""
    # Node 3 at the timelines' own position (term 0, START_LSN): news, but not ahead.
    batch = PeerInfoBatch(
        NodeId(3), "http://127.0.0.1:1", f"ws://127.0.0.1:{allocate_ports(1)[0]}",
        tuple(PeerTimelineInfo(t, Term(0), Term(0), START_LSN, START_LSN) for t in ttids),
    )
    async with SafekeeperClient(http_url, timeout=timeout) as client:
        before = _change_evaluations(await client.metrics())
        t0 = time.perf_counter()
        await client.post_peer_info(batch)
        woke = 0
        with trio.move_on_after(timeout):
            while woke < len(ttids):
                woke = _change_evaluations(await client.metrics()) - before
                if woke < len(ttids):
                    await trio.sleep(WAKE_POLL)
        seconds = time.perf_counter() - t0
        if woke < len(ttids):
            raise ValueError(f"only {woke} of {len(ttids)} supervisors re-evaluated within "
                             f"{timeout:.0f} s")
        listing = await client.recovery_list()
    blind = [r for r in listing if "sk 3" not in str(r.get("why_no_donor"))]
    if blind:
        raise ValueError(f"{len(blind)} timelines did not see the batch's peer: "
                         f"{blind[0].get('why_no_donor')!r}")
    return seconds
