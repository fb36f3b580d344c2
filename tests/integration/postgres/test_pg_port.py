"""The pg port (``--listen-pg``) with real PostgreSQL 15 clients: pg_receivewal writes
segments byte-identical to the primary's ``pg_wal``; a consumer following the live end is
served from memory, with no disk read; a standby streams from the safekeepers and
replays, and keeps streaming when the node it uses is killed."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from safekeeper_recovery.postgres import PostgresError, PostgresServer, running_postgres
from safekeeper_recovery.testing import Cluster, MiB, wait_until

from ..metrics_support import metric
from .ingest_support import SEG, TTID, segment_name, wait_committed
from .pgport_support import ingesting, pg_conninfo, receivewal


@pytest.fixture
async def pg_cluster(shared_dir: Path) -> Cluster:  # type: ignore[misc]
    c = Cluster(shared_dir / "cluster", 3, pg=True)
    try:
        yield c
    finally:
        await c.aclose()


@pytest.mark.slow
async def test_pg_receivewal_from_a_safekeeper_writes_the_primarys_segments(
    primary: PostgresServer, pg_cluster: Cluster, shared_dir: Path,
) -> None:
    cluster = pg_cluster
    async with ingesting(cluster, primary) as (ingest, start):
        await primary.run_tool("pgbench", "-i", "-s", "4", "-q", primary.conninfo)
        target = await primary.lsn("SELECT pg_current_wal_flush_lsn()")
        assert target - start >= 2 * SEG, f"only {(target - start) / MiB:.1f} MiB of WAL"
        await wait_committed(cluster, [1, 2, 3], target, ingest)

        out = shared_dir / "received"
        out.mkdir()
        # An empty .partial of the timeline's first segment: pg_receivewal starts there
        # (else it starts at the server's current segment).
        (out / f"{segment_name(start // SEG)}.partial").touch()
        done = await receivewal(primary, pg_conninfo(cluster, 2, application_name="recv"),
                                out, f"--endpos={target}")
        assert done.returncode == 0, done.stderr.decode()[-3000:]

    compared = 0
    for segno in range(start // SEG, target // SEG + 1):
        name = segment_name(segno)
        ours = out / name if (out / name).exists() else out / f"{name}.partial"
        theirs = (primary.pg_wal / name).read_bytes()
        got = ours.read_bytes()
        upto = SEG if segno < target // SEG else target % SEG
        assert segno == target // SEG or ours.name == name, f"{name} was not completed"
        assert got[:upto] == theirs[:upto], f"segment {name} differs from pg_wal"
        compared += upto
    assert compared == target - start

    async def disconnected() -> bool:
        # pg_receivewal has exited; the node sees the end of its connection a moment later.
        status = await cluster.timeline_status(2, TTID)
        return all(not c.connected for c in status.pg_consumers)

    await wait_until(disconnected, 10, message="the consumer shown as disconnected")
    status = await cluster.timeline_status(2, TTID)
    assert [c.application_name for c in status.pg_consumers] == ["recv"]
    consumer = status.pg_consumers[0]
    assert consumer.sent_lsn >= target  # the node sent everything pg_receivewal asked for
    # pg_receivewal reports its write position at the start, every 10 s and in reply to a
    # keepalive (none comes if WAL past --endpos was there before it caught up): it is
    # the start or later, not necessarily the end.
    assert consumer.write_lsn is not None
    assert start <= consumer.write_lsn <= consumer.sent_lsn
    # pg_receivewal without --synchronous reports no flush position (0/0): its hold stays
    # where it started (K2).
    assert consumer.flush_lsn == 0
    assert consumer.hold_lsn == start


@pytest.mark.slow
async def test_a_consumer_at_the_live_end_is_served_from_memory_with_no_disk_read(
    primary: PostgresServer, pg_cluster: Cluster, shared_dir: Path,
) -> None:
    """pg_receivewal follows node 2 while pgbench writes: once it has caught up, every
    byte it gets comes from the node's newest WAL in memory (``--wal-memory``, default
    64 MiB), none from the disk, although the node writes WAL with O_DIRECT and so has
    none of it in the page cache. (What it reads to catch up, written before it came, is
    read from the disk: a store keeps its newest WAL only while someone reads it.)"""
    cluster = pg_cluster
    async with ingesting(cluster, primary) as (ingest, start):
        # Past the timeline's first segment: pg_receivewal starts at the start of the
        # segment of the commit position, which must be WAL the node holds.
        await primary.run_tool("pgbench", "-i", "-s", "2", "-q", primary.conninfo)
        ready = await primary.lsn("SELECT pg_current_wal_flush_lsn()")
        assert ready // SEG > start // SEG, "still in the timeline's first segment"
        await wait_committed(cluster, [1, 2, 3], ready, ingest)
        async with httpx.AsyncClient() as http:
            metrics = f"{cluster[2].http_url}/metrics"
            out = shared_dir / "live"
            out.mkdir()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receivewal, primary, pg_conninfo(cluster, 2), out)

                async def following() -> bool:
                    status = await cluster.timeline_status(2, TTID)
                    return any(c.connected and c.sent_lsn >= ready
                               for c in status.pg_consumers)

                await wait_until(following, 30, message="pg_receivewal caught up")
                before = (await http.get(metrics)).text
                [consumer] = (await cluster.timeline_status(2, TTID)).pg_consumers
                await primary.run_tool("pgbench", "-t", "300", "-c", "2", primary.conninfo)
                target = await primary.lsn("SELECT pg_current_wal_flush_lsn()")
                await wait_committed(cluster, [2], target, ingest)

                async def sent_all() -> bool:
                    status = await cluster.timeline_status(2, TTID)
                    return any(c.sent_lsn >= target for c in status.pg_consumers)

                await wait_until(sent_all, 30, message="the live WAL sent to pg_receivewal")
                nursery.cancel_scope.cancel()
            after = (await http.get(metrics)).text
    sent = (metric(after, "safekeeper_pg_sent_bytes_total")
            - metric(before, "safekeeper_pg_sent_bytes_total"))
    from_memory = (metric(after, 'safekeeper_wal_read_bytes_total{source="memory"}')
                   - metric(before, 'safekeeper_wal_read_bytes_total{source="memory"}'))
    from_disk = (metric(after, 'safekeeper_wal_read_bytes_total{source="disk"}')
                 - metric(before, 'safekeeper_wal_read_bytes_total{source="disk"}'))
    # Everything past what it had been sent before pgbench started (read after the
    # metrics, so at least this much was sent after them).
    assert sent >= int(target) - int(consumer.sent_lsn) > 0, after
    assert (from_disk, from_memory >= sent) == (0, True), after
    assert 0 < metric(after, "safekeeper_wal_memory_bytes") <= 64 * MiB


async def _standby_sees(standby: PostgresServer, table: str, timeout: float = 60) -> None:
    async def present() -> bool:
        try:
            return await standby.sql(f"SELECT count(*) FROM {table}") == "1"
        except PostgresError:
            return False  # not replayed yet (or the standby is reconnecting)

    await wait_until(present, timeout, message=f"{table} replayed on the standby", poll=0.2)


@pytest.mark.slow
async def test_a_standby_streams_from_the_safekeepers_and_survives_losing_one(
    primary: PostgresServer, pg_cluster: Cluster, shared_dir: Path, pg_bindir: Path,
) -> None:
    cluster = pg_cluster
    async with ingesting(cluster, primary):
        backup = shared_dir / "backup"
        await primary.base_backup(backup)  # without WAL: the standby streams all of it
        (backup / "standby.signal").touch()
        conninfo = (f"{cluster.pg_hosts} options=''-c tenant_id={TTID.tenant_id} "
                    f"-c timeline_id={TTID.timeline_id}'' application_name=standby1 "
                    "connect_timeout=2")
        settings = {"primary_conninfo": f"'{conninfo}'", "hot_standby": "on",
                    "wal_retrieve_retry_interval": "'200ms'",
                    "wal_receiver_status_interval": "'1s'"}
        async with running_postgres(shared_dir / "standby", from_backup=backup,
                                    bindir=pg_bindir, settings=settings) as standby:
            await primary.sql("CREATE TABLE marker1 AS SELECT 1 AS x")
            await _standby_sees(standby, "marker1")
            port = int(await standby.sql("SELECT sender_port FROM pg_stat_wal_receiver"))
            using = next(i for i, n in cluster.nodes.items() if n.pg_port == port)

            status = await cluster.timeline_status(using, TTID)
            [consumer] = status.pg_consumers
            assert (consumer.application_name, consumer.connected) == ("standby1", True)

            await cluster[using].kill()
            await primary.sql("CREATE TABLE marker2 AS SELECT 1 AS x")
            await _standby_sees(standby, "marker2")
            now = int(await standby.sql("SELECT sender_port FROM pg_stat_wal_receiver"))
            assert now != port
            # the standby's flush position reaches the new node's consumer entry
            other = next(i for i, n in cluster.nodes.items() if n.pg_port == now)
            replayed = await standby.lsn("SELECT pg_last_wal_replay_lsn()")

            async def reported() -> bool:
                st = await cluster.timeline_status(other, TTID)
                return any(c.flush_lsn is not None and c.flush_lsn >= replayed
                           for c in st.pg_consumers)

            await wait_until(reported, 30, message="the standby's flush position reported")
