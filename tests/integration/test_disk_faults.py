"""A full disk under a node while a proposer writes to it, over real loopback sockets.

The node runs in-process (``serve_node``: WAL port, HTTP port, real files with real fsync);
the disk fault is injected through the storage seam. The proposer must end with a clean
error (not hang, not crash); once space is back the timeline takes writes again by itself
(no restart), everything the node acknowledged is still there, and a new proposer run
succeeds.
"""

from __future__ import annotations

import errno
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from safekeeper_recovery.core import (
    AcceptorGreeting,
    AppendRequest,
    AppendResponse,
    Greeting,
    Lsn,
    NodeId,
    ProposerElected,
    TermHistory,
    TermLsn,
    TimelineId,
    VoteRequest,
    VoteResponse,
    WalData,
)
from safekeeper_recovery.node import NodeConfig, RunningNode, serve_node
from safekeeper_recovery.proposer import (
    Proposer,
    ProposerConfig,
    ProposerError,
    WalGenerator,
    propose,
    websocket_connector,
)
from safekeeper_recovery.storage import DiskFaults
from safekeeper_recovery.testing import MiB, make_ttid
from safekeeper_recovery.timeline import Timeline, TimelineParams
from safekeeper_recovery.transport import (
    WalConnectError,
    WalPushClosed,
    open_wal_push,
    open_wal_stream,
    parse_timeline_status,
)

TTID = make_ttid(1)
TENANT, TIMELINE = TTID.tenant_id, TTID.timeline_id
START = Lsn(0x100_0000)
TOTAL = 64 * MiB
"""More than the run ever writes before the fault stops it."""
FAULT_AFTER = 3 * MiB
"""The disk fills up once the node has flushed this much WAL."""


@attrs.define
class InProcessNode:
    data_dir: Path
    running: RunningNode | None = None
    scope: trio.CancelScope | None = None

    async def start(self, nursery: trio.Nursery) -> RunningNode:
        config = NodeConfig(
            node_id=NodeId(1),
            data_dir=self.data_dir,
            listen_http=("127.0.0.1", 0),
            listen_wal=("127.0.0.1", 0),
            recovery=False,
        )

        async def run(task_status: trio.TaskStatus[RunningNode]) -> None:
            with trio.CancelScope() as self.scope:
                await serve_node(config, task_status=task_status)

        self.running = await nursery.start(run)
        return self.running

    def stop(self) -> None:
        assert self.scope is not None
        self.scope.cancel()

    @property
    def timeline(self) -> Timeline:
        assert self.running is not None
        return self.running.registry.get(TTID)


def proposer_config(url: str, total: int, seed: int) -> ProposerConfig:
    return ProposerConfig(
        [url], TENANT, TIMELINE, total, seed=seed,
        reconnect_min=0.05, reconnect_max=0.2, lost_quorum_timeout=1.0,
        keepalive_interval=0.1, drain_timeout=2.0, close_timeout=2.0,
    )


async def read_all(tl: Timeline, start: Lsn, end: Lsn) -> bytes:
    parts, pos = [], start
    while pos < end:
        data = await tl.read_wal(pos, int(end) - int(pos))
        assert data, f"no WAL at {pos}"
        parts.append(data)
        pos += len(data)
    return b"".join(parts)


@pytest.mark.slow
async def test_a_full_disk_stops_the_proposer_cleanly_and_the_timeline_comes_back_by_itself(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "sk1"
    timeline_dir = data_dir / str(TENANT) / str(TIMELINE)
    async with trio.open_nursery() as nursery:
        node = InProcessNode(data_dir)
        running = await node.start(nursery)
        await running.registry.create(TTID, TimelineParams(START, wal_seg_size=MiB))
        tl = node.timeline
        proposer = Proposer(
            proposer_config(running.wal_url, TOTAL, seed=1),
            websocket_connector(TENANT, TIMELINE, connect_timeout=2.0),
        )
        with DiskFaults() as faults:

            async def fill_the_disk() -> None:
                await tl.changed.wait_for(lambda: tl.store.flush_lsn >= START + FAULT_AFTER)
                for op in ("write", "fallocate"):  # a full disk refuses both
                    faults.fail(op, errno.ENOSPC, times=None, under=timeline_dir)

            nursery.start_soon(fill_the_disk)
            with trio.fail_after(60), pytest.raises(ProposerError) as info:
                await proposer.run()
            assert faults.raised() >= 1
            # A clean, explanatory end: quorum lost because the node's disk is full.
            assert "lost quorum" in str(info.value)
            assert "disk full" in str(info.value)
            assert "HTTP 503" in str(info.value)  # its reconnects are refused at the handshake
            acked = proposer.statistics().nodes[running.wal_url].flush_lsn
            assert acked is not None
            assert acked > START  # it was acknowledging before

            broken = tl.snapshot()
            assert broken.broken is not None
            assert broken.broken.startswith("disk full: ")
            assert broken.flush_lsn >= acked
            async with httpx.AsyncClient(base_url=running.http_url, timeout=10) as http:
                status = parse_timeline_status(
                    (await http.get(f"/v1/tenant/{TENANT}/timeline/{TIMELINE}")).json()
                )
                assert status.broken is not None
                assert status.broken.startswith("disk full: ")
                assert status.flush_lsn == broken.flush_lsn
                assert status.recovery.state == "disabled"  # serve_node without an engine
                node_status = (await http.get("/v1/status")).json()
                assert node_status["broken_count"] == 1
                assert "safekeeper_broken_timelines 1.0" in (await http.get("/metrics")).text
            assert not (timeline_dir / "waltmp").exists(), "a failed segment holds space"

            faults.clear()  # space is back: no restart, the timeline heals by itself
            with trio.fail_after(30):
                await tl.changed.wait_for(lambda: tl.broken is None)

        expected = WalGenerator(1, TOTAL)
        snap = tl.snapshot()
        assert snap.flush_lsn >= acked, "acknowledged WAL was lost"
        n = int(snap.flush_lsn) - int(START)
        assert await read_all(tl, START, snap.flush_lsn) == expected.read(0, n)
        with trio.fail_after(60):
            result = await propose(
                proposer_config(running.wal_url, MiB, seed=2),
                websocket_connector(TENANT, TIMELINE, connect_timeout=2.0),
            )
        assert result.start_lsn == snap.flush_lsn
        assert result.commit_lsn == result.end_lsn == snap.flush_lsn + MiB
        assert tl.snapshot().flush_lsn == result.end_lsn
        tail = await read_all(tl, snap.flush_lsn, result.end_lsn)
        assert tail == WalGenerator(2, MiB).read(0, MiB)
        nursery.cancel_scope.cancel()  # the node, and fill_the_disk if it never fired

    async with trio.open_nursery() as nursery:  # and a restart finds all of it
        node = InProcessNode(data_dir)
        await node.start(nursery)
        assert node.timeline.snapshot().flush_lsn == result.end_lsn
        assert node.timeline.broken is None
        node.stop()


async def test_the_wal_port_and_http_api_name_the_disk_fault(tmp_path: Path) -> None:
    """An open push connection closes 1011 "timeline stopped: disk full: ...", a new one is
    refused with 503, wal_stream still serves the durable WAL, and a create on a full
    disk is a 503 naming the cause that leaves nothing behind."""
    data_dir = tmp_path / "sk1"
    async with trio.open_nursery() as nursery:
        node = InProcessNode(data_dir)
        running = await node.start(nursery)
        await running.registry.create(TTID, TimelineParams(START, wal_seg_size=MiB))
        with DiskFaults() as faults:
            async with open_wal_push(running.wal_url, TENANT, TIMELINE) as conn:
                await conn.send(Greeting(TENANT, TIMELINE))
                assert isinstance(await conn.receive(), AcceptorGreeting)
                await conn.send(VoteRequest(1))
                vote = await conn.receive()
                assert isinstance(vote, VoteResponse)
                history = TermHistory([*vote.term_history, TermLsn(1, START)])
                await conn.send(ProposerElected(1, START, history))
                await conn.send(AppendRequest(1, START, Lsn(0), Lsn(0), b"a" * 1000))
                with trio.fail_after(10):
                    reply = await conn.receive()
                assert isinstance(reply, AppendResponse)
                assert reply.flush_lsn == START + 1000
                faults.fail("fdatasync", errno.ENOSPC, times=None,
                            under=data_dir / str(TENANT) / str(TIMELINE))
                await conn.send(AppendRequest(1, START + 1000, Lsn(0), Lsn(0), b"b" * 1000))
                with trio.fail_after(10), pytest.raises(WalPushClosed) as closed:
                    await conn.receive()
            assert closed.value.code == 1011
            assert closed.value.reason.startswith("timeline stopped: disk full: ")
            with pytest.raises(WalConnectError) as refused:
                async with open_wal_push(running.wal_url, TENANT, TIMELINE):
                    pass
            assert refused.value.status == 503
            assert "timeline stopped: disk full" in (refused.value.body or "")
            # Peers may still recover the durable WAL from it.
            async with open_wal_stream(running.wal_url, TENANT, TIMELINE, START, term=1) as ws:
                with trio.fail_after(10):
                    msg = await ws.receive()
                assert isinstance(msg, WalData)
                assert msg.data == b"a" * 1000
                assert msg.wal_end == START + 1000

            other = TimelineId(b"\x07" * 16)
            faults.fail("open", errno.ENOSPC, times=None, under=data_dir)
            body = {"timeline_id": str(other), "start_lsn": str(START), "wal_seg_size": MiB}
            async with httpx.AsyncClient(base_url=running.http_url, timeout=10) as http:
                r = await http.post(f"/v1/tenant/{TENANT}/timeline", json=body)
                assert r.status_code == 503, r.text
                assert r.json()["error"].startswith("disk full: ")
                faults.clear()
                r = await http.post(f"/v1/tenant/{TENANT}/timeline", json=body)
                assert r.status_code == 201, r.text
                listed = (await http.get("/v1/timelines")).json()["timelines"]
                states = {t["timeline_id"]: t["state"] for t in listed}
                assert states == {str(other): "ok", str(TIMELINE): "broken"}
        node.stop()
