"""``n`` node processes that know each other as peers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import trio

from ..core import Lsn, TenantTimelineId
from ..transport import TimelineStatus
from ._cli import BackgroundCli, ProcessResult, run_cli, start_cli
from ._node import READY_TIMEOUT, TEST_PEER_TIMING, NodeProcess
from ._ports import allocate_ports

__all__ = ["DEFAULT_START_LSN", "SEG_SIZE", "Cluster"]

DEFAULT_START_LSN: Final = Lsn(0x1000000)
SEG_SIZE: Final = 1 << 20
"""Segment size of the timelines :meth:`Cluster.create_timeline` makes (small: tests
cross segment boundaries with little WAL)."""


class Cluster:
    """Nodes 1..n under ``work_dir/sk<i>``, each configured with the others as peers.

    Ports are allocated up front, so every node knows its peers before any starts and a
    restarted node keeps its addresses. Nothing starts until :meth:`start`; call
    :meth:`aclose` (SIGKILL every child still running) when done, also on failure.
    """

    def __init__(
        self, work_dir: Path, n: int = 3, *, extra_args: Sequence[str] = (),
        token: str | None = None, peer_timing: Sequence[str] = TEST_PEER_TIMING,
        ready_timeout: float = READY_TIMEOUT, pg: bool = False,
    ) -> None:
        ports = allocate_ports(2 * n)
        pg_ports = allocate_ports(n) if pg else [None] * n
        self.work_dir = work_dir
        self.token = token
        """Sent by the cluster's own HTTP requests (auth on)."""
        self.nodes: dict[int, NodeProcess] = {}
        for i in range(1, n + 1):
            self.nodes[i] = NodeProcess(
                i, work_dir / f"sk{i}", ports[2 * i - 2], ports[2 * i - 1],
                extra_args=list(extra_args), peer_timing=tuple(peer_timing),
                ready_timeout=ready_timeout, pg_port=pg_ports[i - 1],
            )
        for node in self.nodes.values():
            node.peers = {p.node_id: p.http_url for p in self.nodes.values() if p is not node}

    def __getitem__(self, node_id: int) -> NodeProcess:
        return self.nodes[node_id]

    @property
    def wal_urls(self) -> str:
        """``--safekeepers`` style: comma-separated WAL URLs of every node."""
        return ",".join(n.wal_url for n in self.nodes.values())

    @property
    def pg_hosts(self) -> str:
        """libpq ``host=a,b,c port=x,y,z`` of every node's pg port (``pg=True``)."""
        nodes = list(self.nodes.values())
        return (f"host={','.join(n.host for n in nodes)} "
                f"port={','.join(str(n.pg_port) for n in nodes)}")

    async def start(self, ids: Sequence[int] | None = None) -> None:
        """Start the nodes ``ids`` (default: all) concurrently; wait until all are ready."""
        async with trio.open_nursery() as nursery:
            for node_id in ids or list(self.nodes):
                nursery.start_soon(self._start_one, self.nodes[node_id])

    @staticmethod
    async def _start_one(node: NodeProcess) -> None:
        await node.start()

    async def aclose(self) -> None:
        """SIGKILL every child still running and reap it."""
        for node in self.nodes.values():
            if node.running:
                await node.kill()

    def kill_all_now(self) -> None:
        """SIGKILL every child still running, without waiting (outside trio's loop)."""
        for node in self.nodes.values():
            node.kill_now()

    async def create_timeline(
        self, ttid: TenantTimelineId, start_lsn: Lsn = DEFAULT_START_LSN,
        *, wal_seg_size: int = SEG_SIZE, ids: Sequence[int] | None = None,
    ) -> None:
        for node_id in ids or list(self.nodes):
            async with self.nodes[node_id].client(self.token) as client:
                await client.create_timeline(ttid, start_lsn, wal_seg_size=wal_seg_size)

    async def status(self, node_id: int, ttid: TenantTimelineId) -> dict[str, object]:
        """The node's timeline status JSON, raw (for checks of the document itself; read
        fields through :meth:`timeline_status`)."""
        async with self.nodes[node_id].client(self.token) as client:
            return await client.timeline_status(ttid)

    async def timeline_status(self, node_id: int, ttid: TenantTimelineId) -> TimelineStatus:
        """The node's timeline status, validated and typed (``transport.TimelineStatus``)."""
        async with self.nodes[node_id].client(self.token) as client:
            return await client.typed_timeline_status(ttid)

    async def flush_lsn(self, node_id: int, ttid: TenantTimelineId) -> Lsn:
        return (await self.timeline_status(node_id, ttid)).flush_lsn

    async def commit_lsn(self, node_id: int, ttid: TenantTimelineId) -> Lsn:
        return (await self.timeline_status(node_id, ttid)).commit_lsn

    async def digest(
        self, node_id: int, ttid: TenantTimelineId, from_lsn: Lsn, until_lsn: Lsn
    ) -> str:
        async with self.nodes[node_id].client(self.token) as client:
            return await client.digest(ttid, from_lsn, until_lsn)

    async def propose(self, *args: str, timeout: float = 120.0) -> ProcessResult:
        """Run ``propose ARGS`` to completion."""
        return await run_cli("propose", *args, timeout=timeout)

    async def start_propose(self, name: str, *args: str) -> BackgroundCli:
        return await start_cli(self.work_dir, name, "propose", *args)
