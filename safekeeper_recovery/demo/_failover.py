"""A zero-loss failover through the safekeepers, step by step: the ``demo --postgres``
scenario, and the zero-loss test's.

Theory of operation
-------------------
A throw-away primary commits synchronously to the ingest (``synchronous_standby_names``
names its ``application_name``, the slot's name), which streams the primary's WAL into
three safekeepers and tells the primary "flushed" only for what a quorum holds. A standby
made from a base backup streams from the safekeepers' pg ports (``primary_conninfo`` with
``host=a,b,c``), never from the primary. Load runs (pgbench, and a client that counts its
own acknowledged commits); the primary (every process of it) and its ingest are killed
with SIGKILL at once, as if their host died, so the last commit the ingest knew of never
reaches the nodes; ``sync`` commits what a quorum holds; the standby receives WAL up to
that commit and is promoted; the promoted standby must hold every transaction the primary
acknowledged.

Rules
-----
Z1  Acknowledged = a commit that returned to its client. Every row the counting client had
    acknowledged must be on the promoted standby, and at least as many pgbench_history rows
    as pgbench reports processed transactions.
Z2  A row beyond the acknowledged ones is allowed only for a commit in flight when the
    primary died (durable on a quorum, its acknowledgement lost): at most one per client
    connection.
Z3  The standby is promoted only once it has received the WAL up to ``sync``'s commit LSN.
Z4  Every process started here (servers, ingest, pgbench) is stopped by its pid, also when
    a step fails; the nodes belong to the caller.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final, final

import attrs
import trio

from ..core import Lsn, TenantTimelineId
from ..testing import BackgroundCli, Cluster, run_cli, start_cli, wait_until

if TYPE_CHECKING:
    from ..postgres import PostgresServer

__all__ = ["FailoverResult", "run_failover"]

PGBENCH_CLIENTS: Final = 4
SLOT: Final = "safekeeper_recovery"
"""The ingest's slot, and so its application_name (``postgres.DEFAULT_SLOT``; spelled here
because importing ``postgres`` loads psycopg, which no other command needs)."""
_PROCESSED: Final = re.compile(r"number of transactions actually processed: (\d+)")
_STEP_TIMEOUT: Final = 60.0

Say = Callable[[str], None]
LoadTick = Callable[[float, int], None]
"""Called during the load with the seconds elapsed and the commits acknowledged so far."""


@final
@attrs.frozen
class FailoverResult:
    """What the promoted standby holds against what the primary acknowledged."""

    acknowledged: int
    """Commits the counting client saw return (its rows are numbered 1..acknowledged)."""
    client_rows: int
    """The counting client's rows on the promoted standby."""
    missing: int
    """Acknowledged client rows absent from the promoted standby (Z1: must be 0)."""
    pgbench_processed: int | None
    """Transactions pgbench reported processed (None: pgbench was not run)."""
    pgbench_rows: int | None
    """pgbench_history rows on the promoted standby (one per pgbench transaction)."""
    commit_lsn: Lsn
    """What ``sync`` committed: the standby was promoted once it had received this (Z3)."""
    primary_flush_lsn: Lsn
    """The primary's flush position last seen before the kill (its real end is later)."""
    seconds: float
    """From the kill of the primary to the promoted standby answering."""

    @property
    def lost(self) -> int:
        """Acknowledged transactions the promoted standby lacks (Z1)."""
        bench = 0
        if self.pgbench_processed is not None and self.pgbench_rows is not None:
            bench = max(0, self.pgbench_processed - self.pgbench_rows)
        return self.missing + bench

    @property
    def ok(self) -> bool:
        """Z1 and Z2."""
        extra = self.client_rows - (self.acknowledged - self.missing)
        return self.lost == 0 and 0 <= extra <= 1


def _conf_string(value: str) -> str:
    """``value`` as a postgresql.conf string literal."""
    return "'" + value.replace("'", "''") + "'"


def standby_conninfo(cluster: Cluster, ttid: TenantTimelineId) -> str:
    """``primary_conninfo`` for a standby that streams from the safekeepers' pg ports:
    every node, in order (libpq tries the next when one is down)."""
    nodes = list(cluster.nodes.values())
    hosts = ",".join(n.host for n in nodes)
    ports = ",".join(str(n.pg_port) for n in nodes)
    options = f"-c tenant_id={ttid.tenant_id} -c timeline_id={ttid.timeline_id}"
    return (f"host={hosts} port={ports} user=postgres application_name=standby "
            f"options='{options}' connect_timeout=5")


def _count_commits(conninfo: str, stop: threading.Event, acked: list[int]) -> None:
    """Z1: insert rows 1, 2, ... one transaction each until the server goes away (or
    ``stop``); ``acked[0]`` is the last one whose commit returned. Runs in a thread."""
    import psycopg  # only the failover needs it here (0.15 s to import)

    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO acked VALUES (%s)", (acked[0] + 1,))
                acked[0] += 1
    except psycopg.Error:
        pass  # the primary died: the commit in flight, if any, was not acknowledged


@asynccontextmanager
async def _ingest(cluster: Cluster, primary: PostgresServer, ttid: TenantTimelineId,
                  work_dir: Path) -> AsyncIterator[BackgroundCli]:
    """``propose --from-postgres`` into the cluster as a child process (killed at exit)."""
    http = ",".join(n.http_url for n in cluster.nodes.values())
    ingest = await start_cli(
        work_dir, f"ingest-{ttid.timeline_id}", "propose", "--from-postgres", primary.conninfo,
        "--safekeepers", cluster.wal_urls, "--tenant-id", str(ttid.tenant_id),
        "--timeline-id", str(ttid.timeline_id), "--create-timeline-on", http,
        "--no-progress", "--lost-quorum-timeout", "30s",
    )
    try:
        yield ingest
    finally:
        ingest.kill()
        with trio.move_on_after(10, shield=True):
            await ingest.process.wait()


async def run_failover(
    cluster: Cluster, ttid: TenantTimelineId, root: Path, *, load_seconds: float,
    pgbench: bool = True, say: Say = lambda _: None, on_load: LoadTick = lambda _, __: None,
) -> FailoverResult:
    """Run the scenario once on the running ``cluster`` (a fresh timeline ``ttid``) with
    servers under ``root`` (reachable by the server user); raise on any failure. The
    servers and the ingest are gone on return (Z4)."""
    from ..postgres import running_postgres

    async with running_postgres(
        root / "primary",
        settings={"synchronous_standby_names": _conf_string(SLOT)},
    ) as primary:
        say(f"Primary PostgreSQL on port {primary.port}: synchronous_standby_names = "
            f"'{SLOT}' (commits wait for a quorum of safekeepers)")
        async with _ingest(cluster, primary, ttid, root) as ingest:
            await _wait_sync_standby(primary, ingest)
            say("Ingest streaming the primary's WAL into the 3 nodes; it is the primary's "
                "synchronous standby")
            await primary.sql("CREATE TABLE acked (id int PRIMARY KEY)")
            if pgbench:
                await primary.run_tool("pgbench", "-i", "-s", "1", "-q", "-d",
                                       primary.conninfo)
            backup = root / "backup"
            await primary.base_backup(backup)
            conninfo = standby_conninfo(cluster, ttid)
            async with running_postgres(
                root / "standby", from_backup=backup, standby_signal=True,
                settings={"primary_conninfo": _conf_string(conninfo),
                          "synchronous_standby_names": "''", "hot_standby": "on",
                          "wal_receiver_status_interval": "1s"},
            ) as standby:
                await _wait_streaming(standby)
                say(f"Standby on port {standby.port} streams from the safekeepers "
                    f"({conninfo.split(' user=')[0]})")
                acked, processed, flush = await _load_and_crash(
                    primary, ingest, load_seconds, pgbench, say, on_load)
                t0 = time.monotonic()
                commit_lsn = await _sync(cluster, ttid, say)
                await _catch_up(standby, commit_lsn)
                say(f"Standby received the WAL up to {commit_lsn}; promoting it")
                promoted = await standby.sql("SELECT pg_promote(true, 60)",
                                             timeout=_STEP_TIMEOUT)
                if promoted != "t":
                    raise RuntimeError(f"pg_promote returned {promoted!r}")
                seconds = time.monotonic() - t0
                rows, missing = (int(v) for v in (await standby.sql(
                    "SELECT count(*), (SELECT count(*) FROM generate_series(1, "
                    f"{acked}) g WHERE NOT EXISTS (SELECT 1 FROM acked WHERE id = g)) "
                    "FROM acked")).split("|"))
                bench_rows = None
                if pgbench:
                    bench_rows = int(await standby.sql("SELECT count(*) FROM pgbench_history"))
    return FailoverResult(acked, rows, missing, processed, bench_rows, commit_lsn, flush,
                          seconds)


async def _wait_sync_standby(primary: PostgresServer, ingest: BackgroundCli) -> None:
    async def synchronous() -> bool:
        if ingest.process.poll() is not None:
            raise RuntimeError(f"the ingest exited early:\n{ingest.stderr()[-3000:]}")
        state = await primary.sql("SELECT sync_state FROM pg_stat_replication WHERE "
                                  f"application_name = '{SLOT}'")
        return state == "sync"

    await wait_until(synchronous, _STEP_TIMEOUT,
                     message="the ingest to be the primary's synchronous standby")


async def _wait_streaming(standby: PostgresServer) -> None:
    async def streaming() -> bool:
        return await standby.sql("SELECT status FROM pg_stat_wal_receiver") == "streaming"

    await wait_until(streaming, _STEP_TIMEOUT,
                     message=f"the standby to stream from the safekeepers "
                     f"(log: {standby.log_tail(1500)})")


async def _load_and_crash(primary: PostgresServer, ingest: BackgroundCli,
                          load_seconds: float, pgbench: bool, say: Say, on_load: LoadTick,
                          ) -> tuple[int, int | None, Lsn]:
    """Run the load for ``load_seconds``, SIGKILL the primary and its ingest (as if their
    host died: the ingest cannot even pass on its last commit), and return the client's
    acknowledged count, pgbench's processed count and the primary's last flush seen."""
    stop = threading.Event()
    acked = [0]
    bench_out: list[str] = []

    async def client() -> None:
        await trio.to_thread.run_sync(_count_commits, primary.conninfo, stop, acked)

    async def bench() -> None:
        done = await trio.run_process(
            [primary.tool("pgbench"), "-n", "-c", str(PGBENCH_CLIENTS), "-T",
             str(int(load_seconds) + 60), "-d", primary.conninfo],
            capture_stdout=True, capture_stderr=True, check=False,
        )
        bench_out.append(done.stdout.decode())

    flush = Lsn(0)
    crashed = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client)
            if pgbench:
                nursery.start_soon(bench)
            say(f"Load for {load_seconds:g}s: pgbench ({PGBENCH_CLIENTS} clients) "
                "and a client counting its own acknowledged commits" if pgbench else
                f"Load for {load_seconds:g}s: a client counting its own acknowledged commits")
            deadline = trio.current_time() + load_seconds
            while (left := deadline - trio.current_time()) > 0:
                on_load(load_seconds - left, acked[0])
                await trio.sleep(min(0.2, left))  # the load's length, not a condition
            on_load(load_seconds, acked[0])
            flush = await primary.lsn("SELECT pg_current_wal_flush_lsn()")
            pids = primary.crash()
            crashed = True
            ingest.kill()
            say(f"kill -9 of the primary (pids {', '.join(map(str, pids))}) and of its "
                f"ingest (pid {ingest.process.pid}) under load, as if their host died")
    finally:
        stop.set()
        if not crashed:  # Z4: also when a step above failed (once: a pid may be reused)
            primary.crash()
    processed = None
    if pgbench:
        found = _PROCESSED.search(bench_out[0]) if bench_out else None
        if found is None:
            raise RuntimeError(f"pgbench printed no processed count: {bench_out!r}")
        processed = int(found.group(1))
    return acked[0], processed, flush


async def _sync(cluster: Cluster, ttid: TenantTimelineId, say: Say) -> Lsn:
    done = await run_cli("sync", "--safekeepers", cluster.wal_urls,
                         "--tenant-id", str(ttid.tenant_id),
                         "--timeline-id", str(ttid.timeline_id), "--json",
                         timeout=_STEP_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"sync failed (exit {done.returncode}): {done.stderr[-2000:]}")
    doc = json.loads(done.stdout)
    commit = Lsn.parse(str(doc["commit_lsn"]))
    say(f"sync: term {doc['term']}, everything a quorum holds is committed at {commit} "
        f"(in {doc['seconds']:.2f} s)")
    return commit


async def _catch_up(standby: PostgresServer, commit_lsn: Lsn) -> None:
    """Z3: until the standby has received (and flushed) the WAL up to ``commit_lsn``."""
    async def received() -> bool:
        text = await standby.sql("SELECT pg_last_wal_receive_lsn()")
        return bool(text) and Lsn.parse(text) >= commit_lsn

    await wait_until(received, _STEP_TIMEOUT,
                     message=f"the standby to receive the WAL up to {commit_lsn}")
