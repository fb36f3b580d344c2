"""The ingest proposer SIGKILLed mid-stream (while PostgreSQL makes WAL) and restarted loses
nothing and duplicates nothing: every node's WAL equals the server's ``pg_wal`` byte for
byte over the whole range."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.postgres import PostgresServer
from safekeeper_recovery.testing import Cluster, MiB, wait_until
from safekeeper_recovery.transport import HttpError

from .ingest_support import TTID, assert_wal_equals_server, start_ingest, wait_committed

FILLER = (
    "INSERT INTO filler SELECT g, repeat(md5(g::text), 16) FROM generate_series(1, 1000) g;\n"
)


@pytest.mark.slow
async def test_ingest_killed_mid_stream_and_restarted_loses_and_duplicates_nothing(
    primary: PostgresServer, cluster: Cluster, shared_dir: Path,
) -> None:
    await cluster.start()
    http = ",".join(n.http_url for n in cluster.nodes.values())
    await primary.sql("CREATE TABLE filler (id int, pad text)")
    script = shared_dir / "filler.sql"
    script.write_text(FILLER)

    first = await start_ingest(cluster, primary, "ingest1", "--create-timeline-on", http)
    second = third = None
    try:
        async def timeline_start() -> bool:
            try:
                await cluster.status(1, TTID)
            except HttpError:  # not created yet
                return False
            return True

        await wait_until(timeline_start, 30, message="the ingest to create the timeline")
        start = (await cluster.timeline_status(1, TTID)).timeline_start_lsn
        load_done = trio.Event()

        async def load() -> None:
            # Eight seconds at 10 inserts of 1000 rows a second: the kill lands mid-load.
            await primary.run_tool("pgbench", "-n", "-c", "1", "-T", "8", "-R", "10",
                                   "-f", str(script), primary.conninfo)
            load_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(load)
            begin = await primary.lsn("SELECT pg_current_wal_flush_lsn()")
            await wait_committed(cluster, [1, 2], begin + 4 * MiB, first)

            async def slot_restart() -> Lsn:
                return await primary.lsn(
                    "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = "
                    "'safekeeper_recovery'"
                )

            # Status updates acknowledge progress (the slot's restart point follows them);
            # they go out asynchronously, so wait for the first one before the kill.
            async def acknowledged() -> bool:
                return await slot_restart() > start

            await wait_until(acknowledged, 30, message="a status update to move the slot")
            first.kill()  # SIGKILL mid-stream: nothing is flushed or said to anyone
            killed = await first.wait(timeout=30)
            assert killed.returncode == -signal.SIGKILL
            assert not load_done.is_set(), "the load ended before the kill: not mid-stream"
            killed_at = await cluster.flush_lsn(1, TTID)
            # They acknowledged only what a quorum had flushed.
            restart = await slot_restart()
            flushes = sorted([await cluster.flush_lsn(i, TTID) for i in (1, 2, 3)])
            assert start < restart <= flushes[1], (restart, flushes)
            second = await start_ingest(cluster, primary, "ingest2", "--create-timeline-on",
                                        http)
        assert load_done.is_set()
        target = await primary.lsn("SELECT pg_current_wal_flush_lsn()")
        assert target > killed_at + 4 * MiB, "the restarted proposer had little to do"
        await wait_committed(cluster, [1, 2, 3], target, second, timeout=120)
        second.process.send_signal(signal.SIGTERM)
        graceful = await second.wait(timeout=60)
        assert graceful.returncode == 0, graceful.stderr[-3000:]

        # A third run ends by itself at a given LSN.
        await primary.sql("CREATE TABLE after_restart AS SELECT 1 AS one")
        stop_at = await primary.lsn("SELECT pg_current_wal_flush_lsn()")
        third = await start_ingest(cluster, primary, "ingest3", "--stop-at-lsn", str(stop_at))
        done = await third.wait(timeout=60)
        assert done.returncode == 0, done.stderr[-3000:]
        assert str(stop_at) in done.stdout, done.stdout
    finally:
        for run in (first, second, third):
            if run is not None:
                run.kill()

    for node_id in (1, 2, 3):
        async def reached(node_id: int = node_id) -> bool:
            return await cluster.flush_lsn(node_id, TTID) >= stop_at

        await wait_until(reached, 30, message=f"node {node_id} to flush {stop_at}")
        assert await cluster.flush_lsn(node_id, TTID) == stop_at
        compared = assert_wal_equals_server(cluster, node_id, primary, start, stop_at)
        assert compared == stop_at - start
    term = (await cluster.timeline_status(1, TTID)).term
    assert term >= 3, term  # three elected runs wrote it
