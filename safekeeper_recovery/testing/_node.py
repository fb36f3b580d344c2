"""One ``safekeeper-recovery serve`` child process, with fixed id, data dir and ports."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import attrs
import trio

from ..transport import SafekeeperClient
from ._cli import CLI

__all__ = ["READY_TIMEOUT", "STOP_TIMEOUT", "TEST_PEER_TIMING", "NodeProcess",
           "NodeProcessError"]

READY_TIMEOUT: Final = 20.0
STOP_TIMEOUT: Final = 20.0
TEST_PEER_TIMING: Final = ("--heartbeat-timeout", "2s", "--peer-push-interval", "200ms")
"""Peer liveness in seconds rather than the production 5 s (tests wait on it)."""


class NodeProcessError(Exception):
    """A node process did not do what was asked (exit before ready, not ready in time,
    ignored SIGTERM, exited non-zero on it); the message ends with its log."""


@attrs.define(eq=False)
class NodeProcess:
    """One ``serve`` child: the same id, data dir and ports across restarts.

    ``start`` waits for the node's ``--ready-file`` (both ports listen), with a deadline;
    ``kill`` is a crash (SIGKILL), ``terminate`` a graceful stop that must exit 0, ``stop``
    either without judging the exit code. Each start logs (stderr, JSON lines) to its own
    ``stderr.<n>.log`` under ``work_dir``; stdout is discarded. The child's environment
    has no ``SAFEKEEPER_*`` variables, so only its arguments configure it.
    """

    node_id: int
    work_dir: Path
    http_port: int
    wal_port: int
    peers: dict[int, str] = attrs.field(factory=dict)
    extra_args: list[str] = attrs.field(factory=list)
    peer_timing: Sequence[str] = TEST_PEER_TIMING
    """Arguments before ``extra_args``; ``()`` for production defaults (demo, bench)."""
    nofile: int | None = None
    """Start the process with this soft ``RLIMIT_NOFILE`` (as a system default would)."""
    nofile_hard: int | None = None
    """Start the process with this hard ``RLIMIT_NOFILE`` too (the node cannot raise its
    soft limit past it; with ``nofile`` not above it)."""
    ready_timeout: float = READY_TIMEOUT
    host: str = "127.0.0.1"
    """The address both ports listen on (the fault campaign gives each node its network
    namespace's address)."""
    launcher: Sequence[str] = ()
    """Prefix of the command line, e.g. ``ip netns exec NS``; it must exec the node, so
    that the process's pid is the node's (the ready file is checked against it)."""
    pg_port: int | None = None
    """The PostgreSQL replication port (``--listen-pg``), or ``None`` for none."""
    process: trio.Process | None = None
    starts: int = 0

    @property
    def data_dir(self) -> Path:
        return self.work_dir / "data"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def wal_url(self) -> str:
        return f"ws://{self.host}:{self.wal_port}"

    def pg_conninfo(self, tenant_id: object, timeline_id: object, **extra: str) -> str:
        """libpq conninfo of this node's pg port for one timeline (``pg_port`` set)."""
        if self.pg_port is None:
            raise NodeProcessError(f"node {self.node_id} has no pg port")
        words = [f"host={self.host}", f"port={self.pg_port}",
                 f"options='-c tenant_id={tenant_id} -c timeline_id={timeline_id}'"]
        words += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(words)

    @property
    def ready_file(self) -> Path:
        return self.work_dir / "ready.json"

    @property
    def stderr_path(self) -> Path:
        """The log of the current (or last) start."""
        return self.work_dir / f"stderr.{self.starts}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise NodeProcessError(f"node {self.node_id} was never started")
        return self.process.pid

    def args(self) -> list[str]:
        """The child's command line."""
        args = [
            *self.launcher, *CLI, "serve",
            "--node-id", str(self.node_id),
            "--data-dir", str(self.data_dir),
            "--listen-http", f"{self.host}:{self.http_port}",
            "--listen-wal", f"{self.host}:{self.wal_port}",
            *(["--listen-pg", f"{self.host}:{self.pg_port}"] if self.pg_port else []),
            "--ready-file", str(self.ready_file),
            "--log-format", "json",
            *self.peer_timing,
        ]
        for peer_id, url in sorted(self.peers.items()):
            args += ["--peer", f"{peer_id}={url}"]
        return [*args, *self.extra_args]

    def logs(self) -> list[Path]:
        """The log of every start so far, oldest first."""
        return [self.work_dir / f"stderr.{n}.log" for n in range(1, self.starts + 1)]

    def stderr(self) -> str:
        """The log of the current (or last) start ("" before the first)."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail_log(self, lines: int = 20) -> str:
        return "\n".join(self.stderr().splitlines()[-lines:])

    async def start(self, *, timeout: float | None = None) -> None:
        """Start the process and wait for its ready file (``ready_timeout`` by default).

        Raises :class:`NodeProcessError` (with the log) if the node exits first, does not
        get ready in time (it is killed then), or reports other ports or another pid.
        """
        if self.running:
            raise NodeProcessError(f"node {self.node_id} is already running")
        timeout = self.ready_timeout if timeout is None else timeout
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        self.starts += 1
        nofile, nofile_hard = self.nofile, self.nofile_hard

        def limit_files() -> None:  # runs in the child, before exec
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            hard = hard if nofile_hard is None else nofile_hard
            soft = min(hard, soft) if nofile is None else nofile
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        with self.stderr_path.open("wb") as err:
            self.process = await trio.lowlevel.open_process(
                self.args(), stdout=subprocess.DEVNULL, stderr=err,
                env={k: v for k, v in os.environ.items() if not k.startswith("SAFEKEEPER_")},
                preexec_fn=limit_files if (nofile, nofile_hard) != (None, None) else None,
            )
        process = self.process
        with trio.move_on_after(timeout):
            while not self.ready_file.exists():
                if process.poll() is not None:
                    raise NodeProcessError(
                        f"node {self.node_id} exited with {process.returncode} before ready:"
                        f"\n{self.stderr()}")
                await trio.sleep(0.02)
            ready = json.loads(self.ready_file.read_text())
            expected = {"pid": process.pid, "http": self.http_url, "wal": self.wal_url}
            if {k: ready.get(k) for k in expected} != expected:
                raise NodeProcessError(f"node {self.node_id} is ready as {ready}, "
                                       f"not as {expected}")
            return
        self.kill_now()
        raise NodeProcessError(f"node {self.node_id} not ready within {timeout}s:\n"
                               f"{self.stderr()}")

    def kill_now(self) -> None:
        """SIGKILL without waiting (synchronous: usable outside trio's loop)."""
        if self.running:
            assert self.process is not None
            self.process.kill()

    async def kill(self) -> None:
        """SIGKILL and reap (a crash: nothing is flushed or persisted)."""
        if self.process is None:
            raise NodeProcessError(f"node {self.node_id} was never started")
        self.kill_now()
        with trio.fail_after(STOP_TIMEOUT):
            await self.process.wait()

    async def terminate(self, *, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM and wait; :class:`NodeProcessError` unless it exits 0 in time (then it
        is killed)."""
        if not self.running:
            raise NodeProcessError(f"node {self.node_id} is not running")
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(timeout):
            code = await self.process.wait()
            if code != 0:
                raise NodeProcessError(
                    f"node {self.node_id} exited {code} on SIGTERM:\n{self.stderr()}")
            return
        self.kill_now()
        raise NodeProcessError(
            f"node {self.node_id} ignored SIGTERM for {timeout}s:\n{self.stderr()}")

    async def stop(self, *, kill: bool = False, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (or SIGKILL) if running, and wait: the exit code, whatever it is
        (``None`` if never started). A node that ignores SIGTERM for ``timeout`` seconds
        is killed."""
        if self.process is None:
            return None
        if self.running:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        with trio.move_on_after(timeout):
            return await self.process.wait()
        self.kill_now()
        return await self.process.wait()

    async def restart(self, *, graceful: bool = False) -> None:
        """Stop (SIGTERM and expect exit 0 if ``graceful``, else SIGKILL) and start."""
        if self.running:
            await (self.terminate() if graceful else self.kill())
        await self.start()

    def client(self, token: str | None = None) -> SafekeeperClient:
        """An HTTP client of this node (use ``async with``)."""
        return SafekeeperClient(self.http_url, token=token, timeout=10.0)
