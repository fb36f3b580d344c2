"""The pg port (``--listen-pg``) with real PostgreSQL 15 clients: pg_receivewal writes
segments byte-identical to the primary's ``pg_wal``; a standby streams from the
safekeepers and replays, and keeps streaming when the node it uses is killed."""

from __future__ import annotations

from pathlib import Path

import pytest

from safekeeper_recovery.postgres import PostgresServer
from safekeeper_recovery.testing import Cluster, MiB, wait_until

from .ingest_support import SEG, TTID, segment_name, wait_committed
from .pgport_support import ingesting, pg_conninfo, receivewal


@pytest.fixture
async def pg_cluster(shared_dir: Path) -> Cluster:  # type: ignore[misc]
    c = Cluster(shared_dir / "cluster", 3, pg=True)
    try:
        yield c
    finally:
        await c.aclose()


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
    assert consumer.write_lsn is not None
    assert consumer.write_lsn >= target
    # pg_receivewal without --synchronous reports no flush position (0/0): its hold stays
    # where it started (K2).
    assert consumer.flush_lsn == 0
    assert consumer.hold_lsn == start
