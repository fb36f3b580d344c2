"""A real hypercorn server on 127.0.0.1 (port 0) driven by SafekeeperClient."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
import trio

from safekeeper_recovery.core import Lsn, TenantTimelineId, TimelineId
from safekeeper_recovery.transport import (
    HttpError,
    HttpUnavailable,
    SafekeeperClient,
    parse_acceptor_state,
    serve_http,
)

from ._http_support import SEG, START, TENANT, TTID, start_http_node, wal, write_wal


async def test_client_against_real_server(nursery: trio.Nursery, tmp_path: Path) -> None:
    node = await start_http_node(nursery, tmp_path)
    await node.client.aclose()
    port: int = await nursery.start(serve_http, node.app, "127.0.0.1", 0)
    assert port > 0
    url = f"http://127.0.0.1:{port}"
    async with SafekeeperClient(url, timeout=5.0) as client:
        status = await client.create_timeline(TTID, START, wal_seg_size=SEG)
        assert status["timeline_id"] == str(TTID.timeline_id)
        again = await client.create_timeline(TTID, START, wal_seg_size=SEG)  # idempotent
        assert again["timeline_start_lsn"] == str(START)
        with pytest.raises(HttpError) as conflict:
            await client.create_timeline(TTID, START, wal_seg_size=2 * SEG)
        assert conflict.value.status == 409

        data = wal(20_000)
        end = await write_wal(node.timeline, 1, data)
        term, history = parse_acceptor_state(await client.timeline_status(TTID))
        assert term == 1
        assert history[-1].term == 1
        assert await client.digest(TTID, START, end) == hashlib.sha256(data).hexdigest()
        assert await client.term_bump(TTID) == (1, 2)
        assert await client.term_bump(TTID, 9) == (2, 9)
        assert (await client.status())["timeline_count"] == 1
        assert (await client.timelines())[0]["state"] == "ok"
        assert "safekeeper_timelines 1.0" in await client.metrics()

        with pytest.raises(HttpError) as bad:
            await client.digest(TTID, end, START)
        assert bad.value.status == 400
        assert "from_lsn" in bad.value.message

        unknown = TenantTimelineId(TENANT, TimelineId(b"\x07" * 16))
        with pytest.raises(HttpError) as missing:
            await client.timeline_status(unknown)
        assert missing.value.status == 404
        with pytest.raises(HttpError) as no_recovery:
            await client.recovery_list()
        assert no_recovery.value.message == "recovery is not running on this node"

        await client.delete_timeline(TTID)
        with pytest.raises(HttpError):
            await client.delete_timeline(TTID)


async def test_server_stops_on_cancellation(nursery: trio.Nursery, tmp_path: Path) -> None:
    node = await start_http_node(nursery, tmp_path)
    await node.client.aclose()
    with trio.fail_after(10):
        async with trio.open_nursery() as inner:
            port: int = await inner.start(serve_http, node.app, "127.0.0.1", 0)
            async with SafekeeperClient(f"http://127.0.0.1:{port}") as client:
                assert (await client.status())["node_id"] == 1
            inner.cancel_scope.cancel()
    async with SafekeeperClient(f"http://127.0.0.1:{port}", timeout=2.0) as client:
        with pytest.raises(HttpUnavailable):
            await client.status()


async def test_client_reports_unreachable_node() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nobody listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with SafekeeperClient(f"http://127.0.0.1:{port}", timeout=2.0) as client:
        with pytest.raises(HttpUnavailable) as e:
            await client.digest(TTID, Lsn(1), Lsn(2))
    assert e.value.status == 0
    assert "ConnectError" in str(e.value)
