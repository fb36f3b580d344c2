"""``--pull-missing-timelines``: a node that lacks timelines its peers hold pulls them.

:func:`serve_pull_missing` runs beside the node when the setting is on (docs/pull.md says
why it is off by default):

1. At once, then every ``interval``, ask every configured peer for its timelines
   (``GET /v1/timelines``; a peer that is down is skipped until the next round).
2. A timeline some peer holds and this node lacks is *missing*, unless this node deleted
   it since it started (a delete goes to every node one after another: the others still
   list it for a moment) or a pull of it runs already.
3. Missing timelines are pulled from all the peers (the pull chooses the donor, rule B1),
   at most ``concurrency`` at once. A timeline whose pull failed is tried again after
   ``interval`` doubling per failure up to ``max_backoff``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from ..core import NodeId, TenantId, TenantTimelineId, TimelineId
from ..timeline import TimelineRegistry
from ..transport import HttpError, PullService, SafekeeperClient

__all__ = ["serve_pull_missing"]

log = logging.getLogger(__name__)


async def serve_pull_missing(
    registry: TimelineRegistry,
    pulls: PullService,
    peers: Mapping[NodeId, str],
    *,
    token: str | None,
    timeout: float,
    interval: float = 10.0,
    concurrency: int = 2,
    max_backoff: float = 300.0,
) -> None:
    """See the module docstring; never returns unless cancelled."""
    sources = list(peers.values())
    limiter = trio.CapacityLimiter(concurrency)
    retry_at: dict[TenantTimelineId, tuple[float, int]] = {}
    queued: set[TenantTimelineId] = set()

    async def pull_one(ttid: TenantTimelineId) -> None:
        try:
            async with limiter:
                if ttid in registry.timelines or pulls.running(ttid):
                    return
                log.info("timeline %s is on a peer but not here: pulling it", ttid)
                status = await pulls.pull(ttid, sources)
            if status.state == "failed":
                failures = retry_at.get(ttid, (0.0, 0))[1] + 1
                wait = min(interval * 2 ** failures, max_backoff)
                retry_at[ttid] = (trio.current_time() + wait, failures)
                log.warning("pulling missing timeline %s failed (%s); next try in %.0fs",
                            ttid, status.last_error, wait)
            else:
                retry_at.pop(ttid, None)
        finally:
            queued.discard(ttid)

    async with trio.open_nursery() as nursery:
        while True:
            held = await _peer_timelines(sources, token, timeout)
            now = trio.current_time()
            for ttid in sorted(held):
                if (ttid in registry.timelines or ttid in registry.broken
                        or ttid in registry.deleted_here or ttid in queued
                        or pulls.running(ttid) or retry_at.get(ttid, (0.0, 0))[0] > now):
                    continue
                queued.add(ttid)
                nursery.start_soon(pull_one, ttid)
            await trio.sleep(interval)


async def _peer_timelines(sources: list[str], token: str | None,
                          timeout: float) -> set[TenantTimelineId]:
    found: set[TenantTimelineId] = set()

    async def ask(url: str) -> None:
        try:
            async with SafekeeperClient(url, token=token, timeout=timeout) as client:
                listing = await client.timelines()
        except HttpError as e:
            log.debug("listing the timelines of %s failed: %s", url, e)
            return
        for entry in listing:
            if not isinstance(entry, dict) or entry.get("state") != "ok":
                continue  # a timeline broken there is no source
            try:
                found.add(TenantTimelineId(TenantId.parse(str(entry.get("tenant_id"))),
                                           TimelineId.parse(str(entry.get("timeline_id")))))
            except ValueError:
                continue

    async with trio.open_nursery() as nursery:
        for url in sources:
            nursery.start_soon(ask, url)
    return found
