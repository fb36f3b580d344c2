"""The proposer over real sockets: in-process WAL ports over FileBackend registries."""

from __future__ import annotations

from pathlib import Path

import attrs
import trio

from safekeeper_recovery.core import Lsn, NodeId, TenantTimelineId
from safekeeper_recovery.proposer import (
    ProposerConfig,
    WalGenerator,
    propose,
    websocket_connector,
    websocket_fetcher,
)
from safekeeper_recovery.testing import MiB
from safekeeper_recovery.timeline import FileBackend, Timeline, TimelineParams, TimelineRegistry
from safekeeper_recovery.transport import WalServerConfig, serve_wal
from safekeeper_recovery.transport._auth import Authenticator

from ._fakes import START, TENANT, TIMELINE

TTID = TenantTimelineId(TENANT, TIMELINE)


@attrs.define
class Node:
    registry: TimelineRegistry
    port: int = 0
    scope: trio.CancelScope | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def timeline(self) -> Timeline:
        return self.registry.get(TTID)

    async def start(self, nursery: trio.Nursery) -> None:
        """Serve the WAL port (on the same port as before, if it had one)."""

        async def serve(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as self.scope:
                await serve_wal(
                    self.registry,
                    Authenticator(None),
                    "127.0.0.1",
                    self.port,
                    config=WalServerConfig(keepalive_interval=0.2),
                    task_status=task_status,
                )

        self.port = await nursery.start(serve)

    def stop(self) -> None:
        assert self.scope is not None
        self.scope.cancel()


async def make_nodes(nursery: trio.Nursery, tmp_path: Path, n: int = 3) -> list[Node]:
    nodes = []
    for i in range(1, n + 1):
        registry = TimelineRegistry(NodeId(i), FileBackend(tmp_path / f"sk{i}"))
        await nursery.start(registry.serve)
        await registry.create(TTID, TimelineParams(START, wal_seg_size=MiB))
        node = Node(registry)
        await node.start(nursery)
        nodes.append(node)
    return nodes


def config(urls: list[str], nbytes: int, seed: int) -> ProposerConfig:
    return ProposerConfig(
        urls,
        TENANT,
        TIMELINE,
        nbytes,
        seed=seed,
        reconnect_min=0.02,
        reconnect_max=0.1,
        keepalive_interval=0.1,
        drain_timeout=5.0,
        close_timeout=2.0,
    )


async def read_all(tl: Timeline, start: Lsn, end: Lsn) -> bytes:
    parts, pos = [], start
    while pos < end:
        data = await tl.read_wal(pos, end - pos)
        assert data, f"no WAL at {pos}"
        parts.append(data)
        pos = pos + len(data)
    return b"".join(parts)


async def wait_committed(tl: Timeline, lsn: Lsn) -> None:
    with trio.fail_after(10):
        await tl.changed.wait_for(lambda: tl.acceptor.commit_lsn >= lsn)


async def test_three_real_nodes_hold_identical_committed_wal(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    nodes = await make_nodes(nursery, tmp_path)
    urls = [n.url for n in nodes]
    with trio.fail_after(30):
        result = await propose(config(urls, 4 * MiB, seed=5), websocket_connector(TENANT, TIMELINE))
    end = START + 4 * MiB
    assert result.commit_lsn == result.end_lsn == end
    expected = WalGenerator(5, 4 * MiB).read(0, 4 * MiB)
    for node in nodes:
        assert node.timeline.snapshot().flush_lsn == end
        assert await read_all(node.timeline, START, end) == expected
        await wait_committed(node.timeline, end)


async def test_a_node_down_for_one_run_is_caught_up_from_the_donor_over_wal_stream(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    nodes = await make_nodes(nursery, tmp_path)
    urls = [n.url for n in nodes]
    nodes[2].stop()
    connect = websocket_connector(TENANT, TIMELINE, connect_timeout=2.0)
    with trio.fail_after(30):
        cfg = attrs.evolve(config(urls, 2 * MiB, seed=1), drain_timeout=0.1)
        first = await propose(cfg, connect)
    assert first.flush_lsns[urls[2]] is None
    await nodes[2].start(nursery)
    with trio.fail_after(30):
        second = await propose(
            config(urls, MiB, seed=2),
            connect,
            fetch_wal=websocket_fetcher(TENANT, TIMELINE),
        )
    assert second.term == 2
    assert second.start_lsn == first.end_lsn
    end = second.end_lsn
    expected = WalGenerator(1, 2 * MiB).read(0, 2 * MiB) + WalGenerator(2, MiB).read(0, MiB)
    for node in nodes:
        assert node.timeline.snapshot().flush_lsn == end
        assert await read_all(node.timeline, START, end) == expected
