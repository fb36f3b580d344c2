"""Sidecar mode: run the recovery engine for every timeline of a node reached over its
public endpoints (the node runs with ``--no-recovery``).

``serve_sidecar`` discovers the node's timelines from ``GET /v1/timelines`` and refreshes
that list every ``refresh_interval`` seconds: a new timeline gets a supervisor, a deleted
one has its supervisor cancelled. Never returns unless cancelled.
"""

from __future__ import annotations

import logging

import trio

from ..core import NodeId, TenantId, TenantTimelineId, TimelineId
from ._attempt import RecoveryConfig
from ._donor import NetworkDonorConnector
from ._engine import RecoveryEngine
from ._remote import RemoteTarget

__all__ = ["serve_sidecar"]

log = logging.getLogger(__name__)


async def serve_sidecar(
    node_url: str,
    *,
    token: str | None = None,
    config: RecoveryConfig | None = None,
    poll_interval: float = 0.5,
    refresh_interval: float = 5.0,
    task_status: trio.TaskStatus[RecoveryEngine] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep every timeline of the node at ``node_url`` caught up with its peers."""
    from ..transport import HttpError, SafekeeperClient

    config = config or RecoveryConfig()
    engine = RecoveryEngine(
        NetworkDonorConnector(token=token, http_timeout=config.http_timeout,
                              connect_timeout=config.connect_timeout),
        config,
    )
    scopes: dict[TenantTimelineId, trio.CancelScope] = {}

    async def supervise(target: RemoteTarget, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                try:
                    await engine.supervise(target)
                except HttpError as e:
                    # The node itself is unreachable (restarting?): keep trying, slowly.
                    log.warning("sidecar: node %s unreachable: %s", node_url, e)
                    await trio.sleep(refresh_interval)

    async with SafekeeperClient(node_url, token=token, timeout=config.http_timeout) as client:
        status = await client.status()
        node_id = NodeId(int(status["node_id"]))  # type: ignore[call-overload]
        wal_url = str(status["wal_addr"])
        log.info("sidecar for node %s (%s, %s)", node_id, node_url, wal_url)
        async with trio.open_nursery() as nursery:
            task_status.started(engine)
            while True:
                try:
                    listed = await client.timelines()
                except HttpError as e:
                    log.warning("sidecar: listing timelines of %s failed: %s", node_url, e)
                    listed = None
                if listed is not None:
                    live = {
                        TenantTimelineId(TenantId.parse(str(t["tenant_id"])),
                                         TimelineId.parse(str(t["timeline_id"])))
                        for t in listed
                        if t.get("state") == "ok"
                    }
                    for ttid in live - scopes.keys():
                        scopes[ttid] = trio.CancelScope()
                        target = RemoteTarget(ttid, node_id, node_url, wal_url, token=token,
                                              timeout=config.http_timeout,
                                              poll_interval=poll_interval)
                        nursery.start_soon(supervise, target, scopes[ttid])
                    for ttid in scopes.keys() - live:
                        scopes.pop(ttid).cancel()
                await trio.sleep(refresh_interval)
