"""Synchronous ingest: ``synchronous_standby_names`` naming the ingest's application_name
(the slot's name, rule I6) makes a commit on the primary return only once a quorum of
safekeepers has flushed it. With the quorum down the commit waits (``SyncRep``), with the
quorum back it returns, and by then a quorum of nodes holds its commit record, byte for
byte the server's WAL."""

from __future__ import annotations

import re

import pytest
import trio

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.postgres import DEFAULT_SLOT, PostgresServer
from safekeeper_recovery.testing import Cluster, wait_until

from .ingest_support import (
    TTID,
    assert_wal_equals_server,
    start_ingest,
    wait_committed,
    wait_created,
)

COMMIT = re.compile(r"len \(rec/tot\):\s*\d+/\s*(\d+), tx:\s*(\d+), lsn: ([0-9A-F]+/[0-9A-F]+), "
                    r"prev [0-9A-F]+/[0-9A-F]+, desc: COMMIT")


async def make_synchronous(pg: PostgresServer, name: str) -> None:
    """Name the ingest in ``synchronous_standby_names`` and wait until the server treats it
    as its synchronous standby."""
    await pg.sql(f"ALTER SYSTEM SET synchronous_standby_names = '{name}'")
    await pg.sql("SELECT pg_reload_conf()")

    async def sync_standby() -> bool:
        state = await pg.sql("SELECT sync_state FROM pg_stat_replication "
                             f"WHERE application_name = '{name}'")
        return state == "sync"

    await wait_until(sync_standby, 30, message=f"{name} to be the synchronous standby")


async def commit_end(pg: PostgresServer, xid: str, since: Lsn, until: Lsn) -> Lsn:
    """End of transaction ``xid``'s commit record, from the server's own ``pg_wal``."""
    out = await pg.run_tool("pg_waldump", "-p", str(pg.pg_wal), "-s", str(since),
                            "-e", str(until), "-x", xid)
    [(total, _, lsn)] = [m.groups() for m in COMMIT.finditer(out)]
    return Lsn.parse(lsn) + int(total)


@pytest.mark.slow
async def test_a_synchronous_commit_waits_for_a_quorum_of_safekeepers(
    primary: PostgresServer, cluster: Cluster,
) -> None:
    await cluster.start()
    http = ",".join(n.http_url for n in cluster.nodes.values())
    # A long lost-quorum timeout: the ingest outlives the quorum's absence (in production a
    # supervisor restarts it instead; the server holds the commit either way).
    ingest = await start_ingest(cluster, primary, "ingest", "--create-timeline-on", http,
                                "--lost-quorum-timeout", "120s")
    try:
        await wait_created(cluster, [1, 2, 3], ingest)
        await primary.sql("CREATE TABLE t (v int); CREATE TABLE t2 (v int)")
        await wait_committed(cluster, [1, 2, 3],
                             await primary.lsn("SELECT pg_current_wal_flush_lsn()"), ingest)
        await make_synchronous(primary, DEFAULT_SLOT)
        with trio.fail_after(30):  # the quorum is up: the commit returns
            await primary.sql("INSERT INTO t VALUES (1)")
        # I1: the ingest reports a moved commit at once, also while the server is silent
        # (waiting for that report). It used to wait for its next periodic status (1 s), so
        # 20 commits one after the other took 20 s or more; now a few fsync round trips each.
        t0 = trio.current_time()
        with trio.fail_after(60):
            await trio.run_process(
                [primary.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                 primary.conninfo], stdin=b"INSERT INTO t2 VALUES (1);\n" * 20)
        elapsed = trio.current_time() - t0
        print(f"20 synchronous commits, one after the other: {elapsed:.2f}s")
        assert elapsed < 10, f"20 synchronous commits took {elapsed:.1f}s"

        await cluster[2].kill()
        await cluster[3].kill()
        before = await primary.lsn("SELECT pg_current_wal_insert_lsn()")
        done: list[int] = []
        returned = trio.Event()

        async def insert() -> None:
            result = await trio.run_process(
                [primary.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                 primary.conninfo, "-c", "INSERT INTO t VALUES (2)"], check=False)
            done.append(result.returncode)
            returned.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(insert)

            async def waits_for_sync_rep() -> bool:
                return await primary.sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
                ) == "1"

            await wait_until(waits_for_sync_rep, 30,
                             message="the commit to wait for the synchronous standby")
            assert done == []  # blocked, not returned (and not failed)
            assert await primary.sql("SELECT count(*) FROM t") == "1"  # not visible yet

            await cluster.start([2, 3])
            with trio.fail_after(60):  # the quorum is back: the commit returns
                await returned.wait()
        assert done == [0]

        xid = await primary.sql("SELECT xmin FROM t WHERE v = 2")
        end = await commit_end(primary, xid, before,
                               await primary.lsn("SELECT pg_current_wal_insert_lsn()"))
        flushes = {i: await cluster.flush_lsn(i, TTID) for i in (1, 2, 3)}
        holding = [i for i, f in flushes.items() if f >= end]
        assert len(holding) >= 2, (end, flushes)
        start = (await cluster.timeline_status(1, TTID)).timeline_start_lsn
        for i in holding:
            assert assert_wal_equals_server(cluster, i, primary, start, end) == end - start
    finally:
        ingest.kill()
        await ingest.wait(timeout=30)
        await primary.sql("ALTER SYSTEM RESET synchronous_standby_names")
        await primary.sql("SELECT pg_reload_conf()")
