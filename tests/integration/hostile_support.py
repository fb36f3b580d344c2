"""Helpers of the hostile-input tests against real ``serve`` processes.

The node is ``safekeeper_recovery.testing``'s :class:`NodeProcess` (one launcher for
every real-process test). After hostile input the tests ask two things of it: does a
timeline still take WAL from a proposer (:func:`write_wal`), and does every timeline load
again after a restart (:func:`restart_and_check`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import httpx
import trio

from safekeeper_recovery.core import Lsn, TenantTimelineId
from safekeeper_recovery.proposer import ProposerConfig, propose, websocket_connector
from safekeeper_recovery.testing import DEFAULT_START_LSN, SEG_SIZE, NodeProcess, allocate_ports

__all__ = ["one_node", "restart_and_check", "ttid_url", "write_wal"]

DEADLINE: Final = 15.0



def ttid_url(ttid: TenantTimelineId) -> str:
    return f"/v1/tenant/{ttid.tenant_id}/timeline/{ttid.timeline_id}"


@asynccontextmanager
async def one_node(
    work_dir: Path, ttids: Iterable[TenantTimelineId], *extra_args: str,
    nofile: int | None = None, nofile_hard: int | None = None,
) -> AsyncIterator[NodeProcess]:
    """A single ``serve`` process (no peers, no recovery) holding ``ttids``; SIGKILLed at
    the end whatever happens. ``nofile``, ``nofile_hard``: its soft and hard open-files
    limits at start."""
    http_port, wal_port = allocate_ports(2)
    node = NodeProcess(1, work_dir, http_port, wal_port,
                       extra_args=["--no-recovery", *extra_args], nofile=nofile,
                       nofile_hard=nofile_hard)
    try:
        await node.start()
        async with node.client() as client:
            for ttid in ttids:
                await client.create_timeline(ttid, DEFAULT_START_LSN, wal_seg_size=SEG_SIZE)
        yield node
    finally:
        if node.running:
            await node.kill()


async def write_wal(node: NodeProcess, ttid: TenantTimelineId, nbytes: int = 65536) -> Lsn:
    """Run the product's proposer against ``node`` alone (a quorum of one): it must be
    elected and get ``nbytes`` committed. Returns the commit position."""
    config = ProposerConfig(safekeepers=(node.wal_url,), tenant_id=ttid.tenant_id,
                            timeline_id=ttid.timeline_id, total_bytes=nbytes)
    with trio.fail_after(DEADLINE):
        result = await propose(config, websocket_connector(ttid.tenant_id, ttid.timeline_id))
    assert result.commit_lsn == result.end_lsn == result.start_lsn + nbytes, result
    return result.commit_lsn


async def restart_and_check(node: NodeProcess, ttids: Iterable[TenantTimelineId]) -> None:
    """SIGKILL and start the node again; every timeline must load (status 200, not broken)
    and still take WAL."""
    await node.restart()
    async with httpx.AsyncClient(base_url=node.http_url, timeout=DEADLINE) as http:
        for ttid in ttids:
            r = await http.get(ttid_url(ttid))
            assert r.status_code == 200, (ttid, r.text)
            assert r.json()["broken"] is None, r.text
            await write_wal(node, ttid)
