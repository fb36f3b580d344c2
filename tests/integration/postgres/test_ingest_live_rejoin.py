"""A node rejoining over and over while ``propose --from-postgres`` ingests a PostgreSQL
under pgbench load (issue 12): the ingest is never refused or stopped, node 3 catches up
every time, and in the end every node's WAL equals the server's ``pg_wal`` byte for byte.

``LIVE_LOAD_ROUNDS`` (default 20) sets the number of rejoins, ``LIVE_LOAD_SEED`` replays
the random timing (the seed is printed)."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import pytest
import trio

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.postgres import PostgresServer
from safekeeper_recovery.testing import Cluster, wait_until
from safekeeper_recovery.transport import HttpError

from .ingest_support import TTID, assert_wal_equals_server, start_ingest, wait_committed

ROUNDS = int(os.environ.get("LIVE_LOAD_ROUNDS", "20"))
FILLER = "INSERT INTO filler SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 200) g;\n"
STOPPED = ("term already taken", "newer term", "R3:", "R7:", "code 4009", "Traceback")


def _refusals_sent(cluster: Cluster) -> list[str]:
    """4009 closes the nodes sent to a proposer, from their JSON logs (all runs)."""
    found = []
    for node in cluster.nodes.values():
        for path in node.work_dir.glob("stderr.*.log"):
            for line in path.read_text().splitlines():
                try:
                    event = json.loads(line).get("event", "")
                except (ValueError, AttributeError):
                    continue
                if str(event).startswith("WAL push from") and "refused" in str(event):
                    found.append(str(event))
    return found


@pytest.mark.slow
@pytest.mark.timeout(900)  # 20 restarts of a node process: minutes on a loaded machine
async def test_a_node_rejoining_under_pgbench_load_never_disturbs_the_ingest(
    primary: PostgresServer, cluster: Cluster, shared_dir: Path,
) -> None:
    seed = int(os.environ.get("LIVE_LOAD_SEED", str(random.randrange(1 << 30))))
    print(f"replay with LIVE_LOAD_SEED={seed}")
    rng = random.Random(seed)
    await cluster.start()
    http = ",".join(n.http_url for n in cluster.nodes.values())
    await primary.sql("CREATE TABLE filler (id int, pad text)")
    script = shared_dir / "filler.sql"
    script.write_text(FILLER)
    ingest = await start_ingest(cluster, primary, "ingest", "--create-timeline-on", http,
                                "--lost-quorum-timeout", "30s")
    try:
        async def created() -> bool:
            try:
                await cluster.status(1, TTID)
            except HttpError:
                return False
            return True

        await wait_until(created, 30, message="the ingest to create the timeline")
        start = (await cluster.timeline_status(1, TTID)).timeline_start_lsn
        async with trio.open_nursery() as load:
            # pgbench writes all along (about 1 MiB/s of WAL); cancelled once the rounds end.
            load.start_soon(lambda: primary.run_tool(
                "pgbench", "-n", "-c", "1", "-T", "3600", "-R", "40", "-f", str(script),
                primary.conninfo, timeout=3600))
            for _ in range(ROUNDS):
                # Random pauses: where in the stream node 3 dies and for how long (input).
                await trio.sleep(rng.uniform(0.0, 0.8))
                await cluster[3].kill()
                await trio.sleep(rng.uniform(0.1, 1.5))
                await cluster[3].start()
                target = await cluster.flush_lsn(1, TTID)

                async def caught_up(target: Lsn = target) -> bool:
                    return await cluster.flush_lsn(3, TTID) >= target

                await wait_until(caught_up, 60, message=f"node 3 to catch up to {target}")
                assert ingest.process.poll() is None, ingest.stderr()[-3000:]
            load.cancel_scope.cancel()
        end = await primary.lsn("SELECT pg_current_wal_flush_lsn()")
        await wait_committed(cluster, [1, 2, 3], end, ingest, timeout=60)
        ingest.process.send_signal(signal.SIGTERM)
        done = await ingest.wait(timeout=60)
    finally:
        ingest.kill()
    assert done.returncode == 0, done.stderr[-3000:]
    stopped = [line for line in done.stderr.splitlines()
               if line.startswith("Error:") or any(m in line for m in STOPPED)]
    assert stopped == [], done.stderr[-3000:]
    assert _refusals_sent(cluster) == []

    # The server wrote a little WAL after ``end`` (the run ends at its next stop): node 3
    # may still be recovering that tail, renaming a finished segment as it goes, so the
    # files are compared once all three nodes hold the same WAL.
    async def settled() -> bool:
        flushes = {await cluster.flush_lsn(i, TTID) for i in (1, 2, 3)}
        return len(flushes) == 1 and min(flushes) >= end

    await wait_until(settled, 60, message="the three nodes to hold the same WAL")
    for node_id in (1, 2, 3):
        assert assert_wal_equals_server(cluster, node_id, primary, start, end) == end - start
