"""The pg port against PostgreSQL's own walsender: ``pg_receivewal`` streaming the same WAL
from a safekeeper's ``--listen-pg`` port, in the same run.

Before the benchmark's WAL is made, :meth:`PgPortBench.reserve` creates one more slot on
the benchmark's server, reserving WAL from the same start as the rounds' slots. Once the
WAL exists, :meth:`PgPortBench.load` starts one node with a pg port and copies the WAL into
it with the ingest (``propose --from-postgres --stop-at-lsn --create-timeline-on``, up to
the server's flush position, past ``end_lsn``,
byte-identical to ``pg_wal``, as the ingest tests check). Each round, :meth:`stream` runs
``pg_receivewal`` exactly as the walsender figure does (same start segment, same
``--endpos``, a slot name so it reports flush positions, default fsync per segment), but
against the node: the target directory starts with an empty ``.partial`` of the start
segment, which is where pg_receivewal then starts (the node has no slots to ask).

The node reads all of its WAL from the disk: ``O_DIRECT``, ``--wal-memory 0`` (else the
newest 32 MiB it ingested would be served from memory), and its files evicted from the
page cache before each round too, in case the file system refused ``O_DIRECT`` and the
writes went through the cache. The report compares it with the walsender both ways: reading
WAL from the page cache, where PostgreSQL's own writes left it, and from the disk (the
same I/O mode as the node: ``PostgresServer.stream(from_disk=True)``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Final

import attrs
import trio

from ..core import TenantId, TenantTimelineId, TimelineId
from ..testing import NodeProcess, allocate_ports, run_cli
from ._postgres import SEGMENT_SIZE, PostgresServer, evict_from_page_cache

__all__ = ["PgPortBench"]

SLOT: Final = "bench_pgport"
TTID: Final = TenantTimelineId(TenantId(bytes([0x5A] * 16)), TimelineId(bytes([0x5B] * 16)))


def _segment_name(segno: int, tli: int = 1) -> str:
    per_id = 0x1_0000_0000 // SEGMENT_SIZE
    return f"{tli:08X}{segno // per_id:08X}{segno % per_id:08X}"


@attrs.define
class PgPortBench:
    """One node serving the benchmark's WAL on its pg port (see the module docstring)."""

    root: Path
    pg: PostgresServer
    node: NodeProcess | None = None
    load_seconds: float | None = None

    async def reserve(self) -> None:
        """Create the slot that keeps the WAL from the rounds' start (before make_wal)."""
        await self.pg.sql(f"SELECT pg_create_physical_replication_slot('{SLOT}', true)")

    async def load(self) -> None:
        """Start the node and ingest the server's WAL from ``start_lsn`` to its flush
        position (past ``end_lsn``) into it."""
        assert self.pg.end_lsn is not None, "make_wal() first"
        http, wal, pgp = allocate_ports(3)
        # --wal-memory 0: the node's newest WAL would otherwise answer the end of every
        # stream from memory; the figure is of WAL read from the disk, all of it.
        self.node = NodeProcess(1, self.root / "pgport-node", http, wal, pg_port=pgp,
                                peer_timing=(), extra_args=["--wal-memory", "0"])
        await self.node.start()
        conninfo = f"host=127.0.0.1 port={self.pg.port} user=postgres dbname=postgres"
        # pg_receivewal --endpos stops only once it has seen WAL *past* the end position:
        # the node must hold more than end_lsn, as the server does (make_wal overshoots).
        stop = await self.pg.sql("SELECT pg_current_wal_flush_lsn()")
        t0 = time.perf_counter()
        result = await run_cli(
            "propose", "--from-postgres", conninfo, "--slot", SLOT,
            "--safekeepers", self.node.wal_url, "--tenant-id", str(TTID.tenant_id),
            "--timeline-id", str(TTID.timeline_id), "--stop-at-lsn", stop,
            "--create-timeline-on", self.node.http_url, "--no-progress", timeout=1800.0,
        )
        self.load_seconds = time.perf_counter() - t0
        if result.returncode != 0:
            raise RuntimeError(f"ingest into the pg port node failed: {result.stderr[-2000:]}")

    async def stream(self, target: Path) -> float:
        """``pg_receivewal`` from the node's pg port, ``start_lsn``'s segment to
        ``end_lsn``; its wall time in seconds."""
        assert self.node is not None
        assert self.pg.start_lsn is not None
        assert self.pg.end_lsn is not None
        await trio.to_thread.run_sync(lambda: shutil.rmtree(target, ignore_errors=True))
        await trio.Path(target).mkdir(parents=True)
        first = _segment_name(int(self.pg.start_lsn) // SEGMENT_SIZE)
        await trio.Path(target / f"{first}.partial").touch()
        conninfo = (f"host=127.0.0.1 port={self.node.pg_port} user=postgres "
                    f"options='-c tenant_id={TTID.tenant_id} -c timeline_id={TTID.timeline_id}'")
        cmd = [str(self.pg.bindir / "pg_receivewal"), "-D", str(target), "-d", conninfo, "-w",
               "--no-loop", "-S", SLOT, f"--endpos={self.pg.end_lsn}"]
        await trio.to_thread.run_sync(evict_from_page_cache, self.node.data_dir)
        t0 = time.perf_counter()
        result = await trio.run_process(cmd, capture_stderr=True, check=False)
        seconds = time.perf_counter() - t0
        if result.returncode != 0:
            raise RuntimeError(f"pg_receivewal from the pg port exited {result.returncode}: "
                               f"{result.stderr.decode()[-2000:]}")
        shutil.rmtree(target, ignore_errors=True)
        return seconds

    async def stop(self) -> None:
        if self.node is not None and self.node.running:
            await self.node.stop()
