"""``verify`` on an ingested timeline: it starts at a segment start whose first page
continues a record from the previous segment (as PostgreSQL's WAL usually does there), and
``verify`` skips that continuation, as pg_waldump does, instead of calling it corrupt."""

from __future__ import annotations

import pytest

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.postgres import PostgresServer
from safekeeper_recovery.testing import Cluster, run_cli

from .ingest_support import SEG, TTID, start_ingest

IDS = ("--tenant-id", str(TTID.tenant_id), "--timeline-id", str(TTID.timeline_id))


async def cross_into_next_segment_and_checkpoint(pg: PostgresServer) -> Lsn:
    """Write a record that continues 20 kB into the next segment, then checkpoint there:
    the checkpoint's redo point, where a slot created now starts, lies in that segment,
    whose first page continues the record. Returns the segment start."""
    insert = await pg.lsn("SELECT pg_current_wal_insert_lsn()")
    left = SEG - insert % SEG
    await pg.sql(f"SELECT pg_logical_emit_message(false, 'sk', repeat('x', {left + 20_000}))")
    await pg.sql("CHECKPOINT")
    redo = await pg.lsn("SELECT redo_lsn FROM pg_control_checkpoint()")
    assert redo // SEG == insert // SEG + 1, (insert, redo)
    return Lsn(redo - redo % SEG)


@pytest.mark.slow
async def test_verify_skips_the_leading_continuation_of_an_ingested_timeline(
    primary: PostgresServer, cluster: Cluster,
) -> None:
    await cluster.start()
    segment_start = await cross_into_next_segment_and_checkpoint(primary)
    await primary.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g")
    stop_at = await primary.lsn("SELECT pg_current_wal_flush_lsn()")
    http = ",".join(n.http_url for n in cluster.nodes.values())
    ingest = await start_ingest(cluster, primary, "ingest", "--create-timeline-on", http,
                                "--stop-at-lsn", str(stop_at))
    try:
        done = await ingest.wait(timeout=60)
    finally:
        ingest.kill()
    assert done.returncode == 0, done.stderr[-3000:]
    status = await cluster.timeline_status(1, TTID)
    assert status.timeline_start_lsn == segment_start

    by_node = await run_cli("verify", "--node", cluster[1].http_url, *IDS, "--no-progress")
    # The node is running: --data-dir takes no lock and reads its files all the same.
    by_files = await run_cli("verify", "--data-dir", str(cluster[2].data_dir), *IDS,
                             "--no-progress")
    for result in (by_node, by_files):
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"WAL {segment_start}..{stop_at} is valid" in result.stdout
        assert f"bytes at {segment_start} continuing a record from before the start" in (
            result.stdout
        )
