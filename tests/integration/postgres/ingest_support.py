"""Helpers for the ingest tests: the node cluster in a directory the server can read, the
ingest CLI, WAL comparisons with the server's own ``pg_wal``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.postgres import PostgresServer
from safekeeper_recovery.testing import (
    BackgroundCli,
    Cluster,
    MiB,
    make_ttid,
    start_cli,
    wait_until,
)
from safekeeper_recovery.transport import HttpError

__all__ = [
    "SEG",
    "TTID",
    "assert_wal_equals_server",
    "segment_name",
    "sk_segment",
    "start_ingest",
    "wait_committed",
    "wait_created",
    "wal_chunks",
]

SEG: Final = 16 * MiB
TTID: Final = make_ttid(9, tenant=7)


def segment_name(segno: int, seg_size: int = SEG, tli: int = 1) -> str:
    per_xlogid = 0x1_0000_0000 // seg_size
    return f"{tli:08X}{segno // per_xlogid:08X}{segno % per_xlogid:08X}"


def sk_segment(cluster: Cluster, node_id: int, segno: int) -> Path:
    """The node's file for segment ``segno`` (full or ``.partial``)."""
    base = cluster[node_id].data_dir / str(TTID.tenant_id) / str(TTID.timeline_id)
    name = segment_name(segno)
    full = base / name
    return full if full.exists() else base / f"{name}.partial"


def assert_wal_equals_server(cluster: Cluster, node_id: int, pg: PostgresServer,
                             start: Lsn, end: Lsn) -> int:
    """The node's segments equal the server's ``pg_wal`` byte for byte over
    ``[start, end)``; returns the number of bytes compared."""
    compared = 0
    for segno in range(start // SEG, (end - 1) // SEG + 1):
        seg_start = segno * SEG
        lo, hi = max(start, seg_start) - seg_start, min(end, seg_start + SEG) - seg_start
        with sk_segment(cluster, node_id, segno).open("rb") as f:
            f.seek(lo)
            ours = f.read(hi - lo)
        with (pg.pg_wal / segment_name(segno)).open("rb") as f:
            f.seek(lo)
            theirs = f.read(hi - lo)
        assert len(ours) == hi - lo, f"node {node_id} segment {segno} is short"
        if ours != theirs:
            at = next(i for i in range(len(ours)) if ours[i] != theirs[i])
            raise AssertionError(
                f"node {node_id} differs from pg_wal at {Lsn(seg_start + lo + at)}"
            )
        compared += hi - lo
    return compared


def wal_chunks(cluster: Cluster, node_id: int, start: Lsn, end: Lsn) -> Iterator[bytes]:
    """The node's WAL ``[start, end)`` read from its segment files, one piece a segment."""
    for segno in range(start // SEG, (end - 1) // SEG + 1):
        seg_start = segno * SEG
        lo, hi = max(start, seg_start) - seg_start, min(end, seg_start + SEG) - seg_start
        with sk_segment(cluster, node_id, segno).open("rb") as f:
            f.seek(lo)
            yield f.read(hi - lo)


async def start_ingest(cluster: Cluster, pg: PostgresServer, name: str,
                       *extra: str) -> BackgroundCli:
    return await start_cli(
        cluster.work_dir, name, "propose", "--from-postgres", pg.conninfo,
        "--safekeepers", cluster.wal_urls,
        "--tenant-id", str(TTID.tenant_id), "--timeline-id", str(TTID.timeline_id),
        "--no-progress", *extra,
    )


async def wait_committed(cluster: Cluster, ids: list[int], lsn: Lsn, ingest: BackgroundCli,
                         timeout: float = 60.0) -> None:
    """Until every node in ``ids`` reports ``commit_lsn >= lsn`` (fails early if the
    ingest process exits)."""

    async def done() -> bool:
        if ingest.process.returncode is not None or ingest.process.poll() is not None:
            raise AssertionError(f"ingest exited early:\n{ingest.stderr()[-3000:]}")
        for i in ids:
            if await cluster.commit_lsn(i, TTID) < lsn:
                return False
        return True

    await wait_until(done, timeout, message=f"commit_lsn {lsn} on nodes {ids}", poll=0.1)


async def wait_created(cluster: Cluster, ids: list[int], ingest: BackgroundCli,
                       timeout: float = 60.0) -> None:
    """Until every node in ``ids`` has the timeline (``--create-timeline-on``; fails early if
    the ingest process exits)."""

    async def created() -> bool:
        if ingest.process.poll() is not None:
            raise AssertionError(f"ingest exited early:\n{ingest.stderr()[-3000:]}")
        for i in ids:
            try:
                await cluster.status(i, TTID)
            except HttpError:
                return False
        return True

    await wait_until(created, timeout, message=f"the ingest to create the timeline on {ids}")
