"""A throw-away local PostgreSQL and ``pg_receivewal`` streaming a fixed amount of its WAL.

The server is initialised and started by the benchmark (binaries from ``pg_config
--bindir``), as the ``postgres`` user when we are root (the server refuses root). Before
any WAL is made, two physical replication slots per round are created with their WAL
reserved, so every round's ``pg_receivewal -S slot --endpos …`` streams the same bytes from
the same start, and the server cannot recycle them in between.

A stream reads the server's WAL the way the server left it: in the page cache, since
PostgreSQL writes WAL buffered and the benchmark has just made it. ``stream(from_disk=True)``
first evicts the server's WAL files from the page cache (:func:`evict_from_page_cache`),
so the walsender reads them from the disk, as a safekeeper reads its WAL (``O_DIRECT``):
the same I/O mode for the two servers (``_pgport.py``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import attrs
import trio

from ..core import Lsn
from ..testing import allocate_ports

__all__ = ["PostgresServer", "evict_from_page_cache", "find_bindir"]

SEGMENT_SIZE = 16 * 1024 * 1024
MESSAGE_BYTES = 1024 * 1024


def find_bindir() -> Path:
    """PostgreSQL's binaries, from ``pg_config --bindir``; ``RuntimeError`` if missing."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        raise RuntimeError("pg_config not found: install PostgreSQL to compare with it")
    out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
    bindir = Path(out.stdout.strip())
    for tool in ("initdb", "pg_ctl", "postgres", "pg_receivewal", "psql"):
        if not (bindir / tool).exists():
            raise RuntimeError(f"{bindir / tool} missing")
    return bindir


def _run_timed(cmd: list[str]) -> tuple[float, float, int, str]:
    """Run ``cmd`` to its end: (wall seconds, CPU seconds, exit status, stderr)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=err)
        _pid, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - t0
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        err.seek(0)
        return (seconds, usage.ru_utime + usage.ru_stime, process.returncode,
                err.read().decode(errors="replace"))


def evict_from_page_cache(directory: Path) -> int:
    """Drop the page-cache pages of every file under ``directory`` (``POSIX_FADV_DONTNEED``);
    return the number of files. Only clean pages go: PostgreSQL's WAL is, once flushed,
    which ``make_wal`` waits for. Raises ``OSError``."""
    count = 0
    for parent, _dirs, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(parent, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            count += 1
    return count


def _as_server_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    return ["runuser", "-u", "postgres", "--"]


@attrs.define
class PostgresServer:
    """One server under ``root``; ``await start()``, ``await make_wal(n)``, ``stream(i)``."""

    root: Path
    rounds: int
    bindir: Path = attrs.Factory(find_bindir)
    port: int = attrs.Factory(lambda: allocate_ports(1)[0])
    start_lsn: Lsn | None = None
    """Where every slot's streaming starts (segment start of the slots' restart_lsn)."""
    end_lsn: Lsn | None = None

    @property
    def data(self) -> Path:
        return self.root / "pgdata"

    async def _run(self, *cmd: str, as_server: bool = True) -> str:
        prefix = _as_server_user() if as_server else []
        result = await trio.run_process([*prefix, *cmd], capture_stdout=True,
                                        capture_stderr=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} exited {result.returncode}: {result.stderr.decode()[-2000:]}"
            )
        return str(result.stdout.decode()).strip()

    async def sql(self, query: str) -> str:
        return await self._run(str(self.bindir / "psql"), "-X", "-A", "-t", "-q",
                               "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                               "-d", "postgres", "-c", query, as_server=False)

    async def start(self) -> None:
        """initdb, start (fsync on, WAL kept by the slots), create one slot per round."""
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            _as_server_user()
            # The server user must reach its data dir through our (private) temp dir.
            os.chmod(self.root.parent, 0o755)
            shutil.chown(self.root, "postgres")
        await self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                        "--auth=trust", "--no-sync", "-E", "UTF8")
        options = " ".join([
            f"-c port={self.port}", "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root}",
            f"-c max_replication_slots={2 * self.rounds + 2}", "-c max_wal_senders=10",
            "-c max_wal_size=8GB", "-c fsync=on", "-c synchronous_commit=on",
        ])
        await self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w",
                        "-l", str(self.root / "postgres.log"), "-o", options, "start")
        for i in range(self.rounds):
            for slot in (f"bench_{i}", f"bench_disk_{i}"):
                await self.sql(f"SELECT pg_create_physical_replication_slot('{slot}', true)")
        restart = await self.sql("SELECT min(restart_lsn) FROM pg_replication_slots")
        lsn = int(Lsn.parse(restart))
        self.start_lsn = Lsn(lsn - lsn % SEGMENT_SIZE)

    async def make_wal(self, nbytes: int) -> Lsn:
        """Write real WAL (1 MiB logical messages, non-transactional WAL records) until at
        least ``nbytes`` past ``start_lsn`` are flushed; returns ``start_lsn + nbytes``."""
        assert self.start_lsn is not None, "start() first"
        end = Lsn(int(self.start_lsn) + nbytes)
        while True:
            flushed = Lsn.parse(await self.sql("SELECT pg_current_wal_flush_lsn()"))
            if flushed > end:
                break
            count = max(1, (int(end) - int(flushed)) // MESSAGE_BYTES + 1)
            await self.sql(
                "SELECT count(pg_logical_emit_message(false, 'bench', "
                f"repeat(md5(g::text), {MESSAGE_BYTES // 32}))) "
                f"FROM generate_series(1, {count}) g"
            )
        self.end_lsn = end
        return end

    async def stream(self, round_index: int, target: Path, *,
                     from_disk: bool = False) -> tuple[float, float]:
        """``pg_receivewal`` (default fsync: per segment) over TCP loopback from round
        ``round_index``'s slot to ``end_lsn``; returns its wall time and its CPU time (user
        + system from its own rusage), in seconds. ``from_disk``: evict the server's WAL
        from the page cache first (another slot, so each stream starts at ``start_lsn``)."""
        assert self.end_lsn is not None, "make_wal() first"
        await trio.to_thread.run_sync(lambda: shutil.rmtree(target, ignore_errors=True))
        await trio.Path(target).mkdir(parents=True)
        slot = f"bench_{round_index}"
        if from_disk:
            slot = f"bench_disk_{round_index}"
            await trio.to_thread.run_sync(evict_from_page_cache, self.data / "pg_wal")
        cmd = [str(self.bindir / "pg_receivewal"), "-D", str(target), "-h", "127.0.0.1",
               "-p", str(self.port), "-U", "postgres", "-w", "--no-loop",
               "-S", slot, f"--endpos={self.end_lsn}"]
        # A worker thread, because only wait4 hands back the child's own rusage (trio
        # reaps its children without it); --endpos makes the child end by itself.
        seconds, cpu, returncode, stderr = await trio.to_thread.run_sync(_run_timed, cmd)
        if returncode != 0:
            raise RuntimeError(f"pg_receivewal exited {returncode}: {stderr[-2000:]}")
        shutil.rmtree(target, ignore_errors=True)
        return seconds, cpu

    async def stop(self) -> None:
        if self.data.exists():
            await self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                            "-w", "stop")
