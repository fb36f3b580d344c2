"""Sidecar mode: run the recovery engine for every timeline of a node reached over its
public endpoints (the node runs with ``--no-recovery``).

Event-driven like in-process recovery: ``serve_sidecar`` holds one long poll on the node's
change feed (``GET /v1/timelines/changes``) and wakes the supervisor of each timeline the
node reports changed; an idle node costs one request per ``long_poll`` seconds, whatever
its number of timelines. Answers are taken at most once per ``min_interval`` seconds, so a
busy node (a proposer streaming, WAL arriving all the time) costs at most one batch of
wake-ups per interval.

The feed also names created and deleted timelines: a new one gets a supervisor, a deleted
one has its supervisor cancelled. A ``reset`` answer (first poll, or the node restarted)
re-lists the timelines and wakes every supervisor. Never returns unless cancelled.
"""

from __future__ import annotations

import logging
from typing import Final

import trio

from ..core import NodeId, TenantId, TenantTimelineId, TimelineId
from ..recovery import RecoveryConfig, RecoveryEngine
from ..timeline import Watch
from ..transport import HttpError, NetworkDonorConnector, SafekeeperClient
from ._remote import RemoteTarget

__all__ = ["serve_sidecar"]

log = logging.getLogger(__name__)

_FIRST_RETRY: Final = 0.5
"""Seconds before the first retry of a node that does not answer (then doubling)."""


async def serve_sidecar(
    node_url: str,
    *,
    token: str | None = None,
    config: RecoveryConfig | None = None,
    min_interval: float = 0.1,
    long_poll: float = 30.0,
    retry_interval: float = 5.0,
    task_status: trio.TaskStatus[RecoveryEngine] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep every timeline of the node at ``node_url`` caught up with its peers.

    A node that does not answer yet (not started, restarting, or answering 5xx while it
    starts) is waited for: retried after 0.5 s, doubling up to ``retry_interval`` seconds,
    one warning line per failed try; ``task_status.started`` comes once it answered.
    Raises :class:`~safekeeper_recovery.transport.HttpError` if it answers with a client
    error (a wrong URL: 404; auth: 401, 403), which waiting does not mend. Afterwards an
    unreachable node is retried every ``retry_interval`` seconds, and so is a timeline
    whose status cannot be read.
    """
    config = config or RecoveryConfig()
    engine = RecoveryEngine(
        NetworkDonorConnector(token=token, http_timeout=config.http_timeout,
                              connect_timeout=config.connect_timeout),
        config,
    )
    targets: dict[TenantTimelineId, tuple[RemoteTarget, trio.CancelScope]] = {}

    async def supervise(target: RemoteTarget, scope: trio.CancelScope) -> None:
        with scope:
            try:
                while True:
                    try:
                        await engine.supervise(target)
                    except HttpError as e:
                        if e.status == 404:
                            log.info("sidecar: timeline %s is gone from %s", target.ttid,
                                     node_url)
                            return
                        log.warning("sidecar: timeline %s of %s: %s", target.ttid, node_url, e)
                        assert target.changed is not None
                        with trio.move_on_after(retry_interval):
                            await target.changed.wait_changed()
            finally:
                if targets.get(target.ttid, (None, None))[1] is scope:
                    del targets[target.ttid]
                if target.ttid not in targets:  # not replaced by a new supervisor
                    engine.statuses.pop(target.ttid, None)

    async with SafekeeperClient(node_url, token=token, timeout=config.http_timeout) as client:
        status = await _wait_for_node(client, retry_interval)
        node_id = NodeId(int(status["node_id"]))  # type: ignore[call-overload]
        wal_url = str(status["wal_addr"])
        log.info("sidecar for node %s (%s, %s)", node_id, node_url, wal_url)

        def start(nursery: trio.Nursery, ttid: TenantTimelineId) -> None:
            target = RemoteTarget(ttid, node_id, node_url, wal_url, token=token,
                                  timeout=config.http_timeout, changed=Watch(), client=client)
            scope = trio.CancelScope()
            targets[ttid] = target, scope
            nursery.start_soon(supervise, target, scope)

        def stop(ttid: TenantTimelineId) -> None:
            entry = targets.pop(ttid, None)
            if entry is not None:
                entry[1].cancel()

        async def resync(nursery: trio.Nursery) -> None:
            """Match the supervisors to the node's timelines; wake every one kept."""
            listed = await client.timelines()
            live = {
                TenantTimelineId(TenantId.parse(str(t["tenant_id"])),
                                 TimelineId.parse(str(t["timeline_id"])))
                for t in listed
                if t.get("state") == "ok"
            }
            for ttid in targets.keys() - live:
                stop(ttid)
            for ttid in live:
                if ttid in targets:
                    _wake(targets[ttid][0])
                else:
                    start(nursery, ttid)

        async with trio.open_nursery() as nursery:
            task_status.started(engine)
            session: str | None = None
            cursor = 0
            while True:
                try:
                    changes = await client.timeline_changes(session, cursor, wait=long_poll)
                    if changes.reset:
                        await resync(nursery)
                except HttpError as e:
                    log.warning("sidecar: change feed of %s failed: %s", node_url, e)
                    session = None  # resync once it answers again
                    await trio.sleep(retry_interval)
                    continue
                for ttid in changes.deleted:
                    stop(ttid)
                for ttid in changes.changed:
                    if ttid in targets:
                        _wake(targets[ttid][0])
                    else:
                        start(nursery, ttid)  # created since the last answer
                session, cursor = changes.session, changes.cursor
                # Coalesce: whatever changes meanwhile is answered by the next poll at once.
                await trio.sleep(min_interval)


async def _wait_for_node(client: SafekeeperClient, retry_interval: float) -> dict[str, object]:
    """The node's ``/v1/status``, once it answers (see :func:`serve_sidecar`)."""
    delay, attempt = min(_FIRST_RETRY, retry_interval), 0
    while True:
        attempt += 1
        try:
            status = await client.status()
        except HttpError as e:
            if 400 <= e.status < 500:
                raise
            log.warning("sidecar: node %s does not answer (try %d: %s); retrying in %.1f s",
                        client.base_url, attempt, e.message, delay)
        else:
            if attempt > 1:
                log.info("sidecar: node %s answers after %d tries", client.base_url, attempt)
            return status
        await trio.sleep(delay)
        delay = min(delay * 2, retry_interval)


def _wake(target: RemoteTarget) -> None:
    assert target.changed is not None
    target.changed.notify()
