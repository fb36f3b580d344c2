"""``propose --from-postgres --create-timeline-on A,B,C`` with a listed node down: the node
is skipped with a one-line warning while a quorum answers (first run and restart alike),
the run stops with one ``Error:`` line when no quorum does, and the node, once back, gets
the timeline as the README says: ``timeline create`` with the same start and segment size,
then peer recovery fills it with the server's WAL."""

from __future__ import annotations

import pytest

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.postgres import PostgresServer
from safekeeper_recovery.testing import Cluster, run_cli, wait_until

from .ingest_support import SEG, TTID, assert_wal_equals_server, start_ingest

IDS = ("--tenant-id", str(TTID.tenant_id), "--timeline-id", str(TTID.timeline_id))


async def ingest_until(cluster: Cluster, pg: PostgresServer, name: str, stop_at: Lsn
                       ) -> tuple[int, str]:
    """One ingest run with every node listed in ``--create-timeline-on``, to ``stop_at``."""
    http = ",".join(n.http_url for n in cluster.nodes.values())
    run = await start_ingest(cluster, pg, name, "--create-timeline-on", http,
                             "--stop-at-lsn", str(stop_at), "--lost-quorum-timeout", "30")
    try:
        done = await run.wait(timeout=90)
    finally:
        run.kill()
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stderr


@pytest.mark.slow
async def test_ingest_skips_a_node_that_is_down_and_the_node_catches_up_when_back(
    primary: PostgresServer, cluster: Cluster,
) -> None:
    await cluster.start([1])
    target = await primary.lsn("SELECT pg_current_wal_flush_lsn()")
    code, stderr = await ingest_until(cluster, primary, "no-quorum", target)
    assert code == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    assert "only 1 of the 3 nodes to create it on answered, a quorum is 2" in errors[0]
    assert cluster[2].http_url in errors[0]
    assert cluster[3].http_url in errors[0]

    await cluster.start([2])
    down = cluster[3].http_url
    stops = []
    for run in ("first", "restarted"):  # the restart repeats the same arguments
        await primary.sql(f"CREATE TABLE {run}_run AS SELECT g FROM generate_series(1, 5000) g")
        stops.append(await primary.lsn("SELECT pg_current_wal_flush_lsn()"))
        code, stderr = await ingest_until(cluster, primary, run, stops[-1])
        assert code == 0, stderr
        skipped = [line for line in stderr.splitlines() if line.startswith(f"skipping {down}")]
        assert len(skipped) == 1, stderr
        assert "create the timeline there with the same start and segment size" in skipped[0]
        assert await cluster.flush_lsn(1, TTID) == stops[-1]

    # Node 3 is back: the README's way to give it the timeline.
    await cluster.start([3])
    status = await cluster.timeline_status(1, TTID)
    start = status.timeline_start_lsn
    assert status.wal_seg_size == SEG
    created = await run_cli("timeline", "create", "--node", down, *IDS,
                            "--start-lsn", str(start), "--wal-seg-size", "16MiB")
    assert created.returncode == 0, created.stderr

    async def caught_up() -> bool:
        return await cluster.flush_lsn(3, TTID) >= stops[-1]

    await wait_until(caught_up, 60, message="node 3 to recover the ingested WAL from a peer")
    assert await cluster.flush_lsn(3, TTID) == stops[-1]
    assert assert_wal_equals_server(cluster, 3, primary, start, stops[-1]) == stops[-1] - start
