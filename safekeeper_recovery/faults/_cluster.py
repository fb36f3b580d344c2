"""``serve`` nodes on a :class:`Network`, one per namespace, and how to run the proposer in
its namespace against them.

``async with open_cluster(tag, nodes, out_dir) as cluster`` builds the network, starts the
nodes (``testing.NodeProcess``, launched through ``ip netns exec``), creates the timeline
``TTID`` on each, and on the way out, however it is left, SIGKILLs and reaps every node
(SIGCONT first: a paused one would keep its namespace alive) and removes the network.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import trio

from ..core import Lsn, TenantId, TenantTimelineId, TimelineId
from ..testing import NodeProcess
from ..transport import SafekeeperClient
from ._network import Network
from ._schedule import PROPOSER
from ._workload import python_cli

__all__ = ["SEG_SIZE", "START_LSN", "TTID", "NetCluster", "open_cluster"]

TTID: Final = TenantTimelineId(TenantId.parse("5d8a3f0c2b1e4d6f9a7c0e1b2d3f4a5b"),
                               TimelineId.parse("c0ffee00c0ffee00c0ffee00c0ffee00"))
START_LSN: Final = Lsn(0x1000000)
SEG_SIZE: Final = 1 << 20
HTTP_PORT: Final = 7676
WAL_PORT: Final = 5454
READY_TIMEOUT: Final = 30.0
"""A node's start-up under a loaded campaign machine (tests wait 20 s)."""


class NetCluster:
    """Nodes 1..n on ``net`` (every node listens on its namespace's address)."""

    def __init__(self, net: Network, nodes: int, out_dir: Path) -> None:
        self.net = net
        peers = {i: f"http://{net.address(i)}:{HTTP_PORT}" for i in range(1, nodes + 1)}
        self.nodes = {
            i: NodeProcess(
                node_id=i, work_dir=out_dir / f"sk{i}", http_port=HTTP_PORT,
                wal_port=WAL_PORT, peers={j: u for j, u in peers.items() if j != i},
                host=net.address(i), launcher=net.wrap(i, []),
                peer_timing=(), extra_args=["--heartbeat-timeout", "3s"],
                ready_timeout=READY_TIMEOUT,
            )
            for i in peers
        }

    def client(self, node_id: int, timeout: float = 1.0) -> SafekeeperClient:
        return SafekeeperClient(self.nodes[node_id].http_url, timeout=timeout)

    async def start(self) -> None:
        """Start every node and create ``TTID`` on it (1 MiB segments)."""
        async with trio.open_nursery() as nursery:
            for node in self.nodes.values():
                nursery.start_soon(node.start)
        for i in self.nodes:
            async with self.client(i, timeout=10.0) as client:
                await client.create_timeline(TTID, START_LSN, wal_seg_size=SEG_SIZE)

    def propose_argv(self, *, nbytes: int, seed: int, wal_format: str = "random",
                     rate: int | None = None) -> list[str]:
        """``propose`` against every node, run in the proposer's namespace."""
        argv = [
            *python_cli(), "propose", "--no-progress",
            "--safekeepers", ",".join(n.wal_url for n in self.nodes.values()),
            "--tenant-id", str(TTID.tenant_id), "--timeline-id", str(TTID.timeline_id),
            "--bytes", str(nbytes), "--seed", str(seed), "--wal-format", wal_format,
            "--wal-seg-size", str(SEG_SIZE),
        ]
        if rate is not None:
            argv += ["--rate", str(rate)]
        return self.net.wrap(PROPOSER, argv)

    def signal(self, node_id: int, sig: signal.Signals) -> None:
        """Send ``sig`` to a node if it is running."""
        node = self.nodes[node_id]
        if node.running:
            os.kill(node.pid, sig)

    async def kill_everything(self) -> None:
        """Last resort, also when cancelled: SIGCONT and SIGKILL every node still running,
        and reap it."""
        with trio.CancelScope(shield=True):
            for node in self.nodes.values():
                if node.running:
                    os.kill(node.pid, signal.SIGCONT)
                    await node.kill()


@asynccontextmanager
async def open_cluster(tag: str, nodes: int, out_dir: Path) -> AsyncIterator[NetCluster]:
    """A started cluster on a new network (see the module docstring); the network's commands
    go to ``out_dir/network-commands.txt`` at the end."""
    net = Network(tag, nodes)
    cluster = NetCluster(net, nodes, out_dir)
    try:
        await trio.to_thread.run_sync(net.create)
        await cluster.start()
        yield cluster
    finally:
        await cluster.kill_everything()
        net.close()
        (out_dir / "network-commands.txt").write_text("\n".join(net.commands) + "\n")
