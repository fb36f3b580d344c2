"""Helpers for the pg port tests: a primary ingested into a three-node cluster whose nodes
serve ``--listen-pg``, and libpq conninfos of those ports."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.postgres import PostgresServer, create_timelines, prepare_ingest
from safekeeper_recovery.testing import BackgroundCli, Cluster

from .ingest_support import TTID, start_ingest, wait_committed

__all__ = ["ingesting", "pg_conninfo", "receivewal"]


def pg_conninfo(cluster: Cluster, node_id: int, **extra: str) -> str:
    """libpq conninfo of node ``node_id``'s pg port for the test timeline."""
    return cluster[node_id].pg_conninfo(TTID.tenant_id, TTID.timeline_id, **extra)


@asynccontextmanager
async def ingesting(cluster: Cluster, primary: PostgresServer) -> AsyncIterator[
        tuple[BackgroundCli, Lsn]]:
    """Start the cluster, create the timeline from the primary's slot, run the ingest;
    yields it and the timeline's start once it streams. Kills the ingest at the end."""
    await cluster.start()
    plan = await prepare_ingest(primary.conninfo)
    await create_timelines(plan, TTID, [n.http_url for n in cluster.nodes.values()], None)
    ingest = await start_ingest(cluster, primary, "ingest")
    try:
        await wait_committed(cluster, list(cluster.nodes), plan.timeline_start + 1, ingest)
        yield ingest, plan.timeline_start
    finally:
        ingest.kill()
        with trio.move_on_after(10, shield=True):
            await ingest.process.wait()


async def receivewal(pg: PostgresServer, conninfo: str, target: Path, *args: str,
                     timeout: float = 120.0) -> subprocess.CompletedProcess[bytes]:
    """Run ``pg_receivewal -d conninfo -D target args`` to its end (any exit code)."""
    with trio.fail_after(timeout):
        return await trio.run_process(
            [pg.tool("pg_receivewal"), "-d", conninfo, "-D", str(target), "--no-loop",
             "--no-password", *args],
            capture_stdout=True, capture_stderr=True, check=False,
        )
