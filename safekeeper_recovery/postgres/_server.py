"""A throw-away PostgreSQL server on loopback, for tests and benchmarks.

Theory of operation
-------------------
:func:`running_postgres` makes a server in a fresh directory (``initdb``, or a copy of a
base backup), starts it listening only on 127.0.0.1 at a free port with its unix socket in
that directory, yields a :class:`PostgresServer`, and always stops it on the way out:
``pg_ctl stop -m fast``, then SIGKILL of the pid in ``postmaster.pid`` if the server is
still there. PostgreSQL refuses to run as root, so when we are root every server command
runs as the ``postgres`` user (``runuser``) and the directory is handed to that user.

Rules
-----
S1  Loopback only: ``listen_addresses=127.0.0.1``, the socket directory is the server's own.
S2  The server is stopped by its pid, never by name; the stop runs in a ``finally``.
S3  Every subprocess call has a deadline and a failure names the command and its stderr.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Final

import attrs
import trio

from ..core import Lsn
from ..testing import allocate_ports

__all__ = [
    "PostgresError",
    "PostgresServer",
    "find_bindir",
    "running_postgres",
    "server_user_prefix",
    "shared_tempdir",
]

SERVER_USER: Final = "postgres"
COMMAND_TIMEOUT: Final = 120.0
STOP_TIMEOUT: Final = 30.0

_DEFAULT_SETTINGS: Final[Mapping[str, str]] = {
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "max_wal_size": "4GB",
    "fsync": "on",
    "synchronous_commit": "on",
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
}


class PostgresError(RuntimeError):
    """A PostgreSQL command failed (the message carries the command and its stderr)."""


def find_bindir() -> Path:
    """PostgreSQL's binaries, from ``pg_config --bindir``; :class:`PostgresError` if missing."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        raise PostgresError("pg_config not found: PostgreSQL is not installed")
    out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
    bindir = Path(out.stdout.strip())
    for tool in ("initdb", "pg_ctl", "postgres", "psql"):
        if not (bindir / tool).exists():
            raise PostgresError(f"{bindir / tool} is missing")
    return bindir


def server_user_prefix() -> list[str]:
    """The command prefix that runs a server command as ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SERVER_USER], check=True)
    return ["runuser", "-u", SERVER_USER, "--"]


def _give_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        server_user_prefix()  # creates the user if needed
        shutil.chown(path, SERVER_USER, SERVER_USER)


@asynccontextmanager
async def shared_tempdir(prefix: str = "pg-") -> AsyncIterator[Path]:
    """A fresh temporary directory the server user can read and write (removed at exit).

    pytest's ``tmp_path`` lives under a root-only directory, out of the server's reach.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        os.chmod(path, 0o777)
        yield path
    finally:
        await trio.to_thread.run_sync(lambda: shutil.rmtree(path, ignore_errors=True))


async def _run(
    argv: Sequence[str], *, timeout: float = COMMAND_TIMEOUT, as_server: bool = False,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a command to completion; its stdout, or :class:`PostgresError` (S3)."""
    full = [*(server_user_prefix() if as_server else []), *argv]
    with trio.move_on_after(timeout) as scope:
        done = await trio.run_process(
            full, capture_stdout=True, capture_stderr=True, check=False,
            env={**os.environ, **(env or {})},
        )
    if scope.cancelled_caught:
        raise PostgresError(f"{' '.join(argv)} did not finish within {timeout}s")
    if done.returncode != 0:
        raise PostgresError(
            f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-2000:]}"
        )
    return str(done.stdout.decode())


@attrs.define
class PostgresServer:
    """One server: its data directory, port and binaries. Made by :func:`running_postgres`."""

    root: Path
    """A directory the server user owns: ``data/``, the socket and ``postgres.log``."""
    port: int
    bindir: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def pg_wal(self) -> Path:
        return self.data_dir / "pg_wal"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def conninfo(self) -> str:
        """A libpq connection string (TCP on loopback, user ``postgres``, trust auth)."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    def pid(self) -> int | None:
        """The postmaster's pid from ``postmaster.pid`` (None if there is none)."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        return int(first) if first.strip().isdigit() else None

    async def sql(self, query: str, *, timeout: float = COMMAND_TIMEOUT) -> str:
        """Run ``query`` with psql; its unaligned, tuples-only output, stripped."""
        out = await _run(
            [self.tool("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
             "-d", self.conninfo, "-c", query],
            timeout=timeout,
        )
        return out.strip()

    async def lsn(self, query: str) -> Lsn:
        """An LSN-valued query, e.g. ``SELECT pg_current_wal_flush_lsn()``."""
        return Lsn.parse(await self.sql(query))

    async def run_tool(self, name: str, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """Run one of the client tools (pgbench, pg_basebackup, ...) against this server."""
        return await _run([self.tool(name), *args], timeout=timeout)

    async def base_backup(self, target: Path) -> None:
        """``pg_basebackup`` without WAL into ``target`` (owned by the server user): a
        server made from it needs the WAL from the backup's start (``restore_command``)."""
        await _run(
            [self.tool("pg_basebackup"), "-d", self.conninfo, "-D", str(target),
             "-X", "none", "-c", "fast", "--no-sync"],
            as_server=True,
        )

    async def start(self) -> None:
        await _run(
            [self.tool("pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "60",
             "-l", str(self.log_file), "start"],
            as_server=True,
        )

    async def stop(self) -> None:
        """Stop the server: ``pg_ctl stop -m fast``, then SIGKILL by pid if it lingers (S2).
        Never raises for a server that is already gone."""
        pid = self.pid()
        if pid is None:
            return
        with suppress(PostgresError):  # the pid is killed below
            await _run(
                [self.tool("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                 "-t", str(int(STOP_TIMEOUT)), "stop"],
                as_server=True, timeout=STOP_TIMEOUT + 5,
            )
        _kill_if_alive(pid)

    def crash(self) -> list[int]:
        """``kill -9`` of the whole server, as a power cut would end it: SIGKILL to the
        postmaster and every process it started (by pid, S2), so no backend outlives it to
        finish a commit. Returns the pids killed (none if it was not running)."""
        pid = self.pid()
        if pid is None:
            return []
        children = _children_of(pid)
        for victim in (pid, *children):
            _kill_if_alive(victim)
        return [pid, *children]

    def log_tail(self, nbytes: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-nbytes:]
        except FileNotFoundError:
            return ""


def _kill_if_alive(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _configure(data_dir: Path, conf: Mapping[str, str], signals: Sequence[str]) -> None:
    lines = "".join(f"{k} = {v}\n" for k, v in conf.items())
    with (data_dir / "postgresql.conf").open("a") as f:
        f.write("\n# safekeeper_recovery test server\n" + lines)
    for name in signals:
        (data_dir / name).touch()
        _give_to_server_user(data_dir / name)


@asynccontextmanager
async def running_postgres(
    root: Path,
    *,
    from_backup: Path | None = None,
    settings: Mapping[str, str] | None = None,
    recovery_signal: bool = False,
    standby_signal: bool = False,
    bindir: Path | None = None,
) -> AsyncIterator[PostgresServer]:
    """Make and start a server under ``root`` (created; must be reachable by the server
    user, see :func:`shared_tempdir`), yield it, and always stop it (S2).

    ``from_backup``: copy this base backup instead of running initdb. ``settings`` are
    appended to ``postgresql.conf`` after the defaults (WAL level replica, senders and
    slots, fsync on). ``recovery_signal`` writes ``recovery.signal`` (archive recovery:
    pair it with a ``restore_command`` setting). ``standby_signal`` writes ``standby.signal``
    (a standby: pair it with ``primary_conninfo`` and/or ``restore_command``).
    """
    server = PostgresServer(root, allocate_ports(1)[0], bindir or find_bindir())
    os.makedirs(root, exist_ok=True)
    _give_to_server_user(root)
    if from_backup is None:
        await _run(
            [server.tool("initdb"), "-D", str(server.data_dir), "-U", "postgres",
             "--auth=trust", "--no-sync", "-E", "UTF8"],
            as_server=True,
        )
    else:
        await _run(["cp", "-a", str(from_backup), str(server.data_dir)], as_server=True)
    conf = {
        **_DEFAULT_SETTINGS,
        "port": str(server.port),
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{root}'",
        **(settings or {}),
    }
    signals = [name for name, on in (("recovery.signal", recovery_signal),
                                     ("standby.signal", standby_signal)) if on]
    await trio.to_thread.run_sync(_configure, server.data_dir, conf, signals)
    try:
        try:
            await server.start()
        except PostgresError as e:
            raise PostgresError(f"{e}\nserver log:\n{server.log_tail()}") from None
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await server.stop()
