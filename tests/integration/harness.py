"""Real-process, real-socket test harness: ``safekeeper-recovery serve`` child processes.

* Ports are allocated up front (bind to port 0 on loopback, note the port, close), so peers
  are configured before any node starts and a restart reuses the same ports.
* A node is ready once its ``--ready-file`` appears; waiting has a deadline and a failure
  shows the node's stderr.
* Everything waits on conditions with deadlines (:func:`wait_until`), never sleeps for luck.
* :meth:`Cluster.aclose` SIGKILLs every child still running (the fixture always calls it).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final

import attrs
import trio

from safekeeper_recovery.core import Lsn, TenantTimelineId
from safekeeper_recovery.transport._http_client import SafekeeperClient

__all__ = [
    "Cluster",
    "NodeProcess",
    "ProcessResult",
    "allocate_ports",
    "run_cli",
    "start_cli",
    "wait_until",
]

READY_TIMEOUT: Final = 20.0
STOP_TIMEOUT: Final = 20.0
CLI: Final = (sys.executable, "-m", "safekeeper_recovery")
DEFAULT_START_LSN: Final = Lsn(0x1000000)
SEG_SIZE: Final = 1 << 20


def allocate_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open together so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


async def wait_until(
    predicate: Callable[[], Awaitable[bool] | bool],
    timeout: float,
    *,
    message: str = "condition",
    poll: float = 0.05,
) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await trio.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@attrs.frozen
class ProcessResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, object]:
        """The last stdout line that is a JSON object (commands print JSON summaries)."""
        for line in reversed(self.stdout.strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                value = json.loads(line)
                assert isinstance(value, dict)
                return value
        try:
            whole = json.loads(self.stdout)
        except ValueError:
            raise AssertionError(f"no JSON object in stdout:\n{self.stdout}") from None
        assert isinstance(whole, dict)
        return whole


async def run_cli(*args: str, timeout: float = 60.0, env: dict[str, str] | None = None
                  ) -> ProcessResult:
    """Run ``python -m safekeeper_recovery ARGS`` to completion (bounded by ``timeout``)."""
    with trio.fail_after(timeout):
        done = await trio.run_process(
            [*CLI, *args], capture_stdout=True, capture_stderr=True, check=False,
            env={**os.environ, **(env or {})},
        )
    return ProcessResult(done.returncode, done.stdout.decode(), done.stderr.decode())


class BackgroundCli:
    """A CLI command running in the background; output goes to files (no pipe stalls)."""

    def __init__(self, process: trio.Process, out: Path, err: Path) -> None:
        self.process = process
        self._out = out
        self._err = err

    async def wait(self, timeout: float = 120.0) -> ProcessResult:
        with trio.fail_after(timeout):
            code = await self.process.wait()
        return ProcessResult(code, self._out.read_text(), self._err.read_text())

    def stderr(self) -> str:
        return self._err.read_text()

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


async def start_cli(work_dir: Path, name: str, *args: str) -> BackgroundCli:
    out, err = work_dir / f"{name}.stdout", work_dir / f"{name}.stderr"
    with out.open("wb") as fout, err.open("wb") as ferr:
        process = await trio.lowlevel.open_process([*CLI, *args], stdout=fout, stderr=ferr)
    return BackgroundCli(process, out, err)


@attrs.define(eq=False)
class NodeProcess:
    """One ``serve`` child: fixed id, data dir and ports across restarts."""

    node_id: int
    work_dir: Path
    http_port: int
    wal_port: int
    peers: dict[int, str] = attrs.field(factory=dict)
    extra_args: list[str] = attrs.field(factory=list)
    nofile: int | None = None
    """Start the process with this soft ``RLIMIT_NOFILE`` (as a system default would)."""
    nofile_hard: int | None = None
    """Start the process with this hard ``RLIMIT_NOFILE`` too (the node cannot raise its
    soft limit past it; with ``nofile`` not above it)."""
    process: trio.Process | None = None
    starts: int = 0

    @property
    def data_dir(self) -> Path:
        return self.work_dir / "data"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def wal_url(self) -> str:
        return f"ws://127.0.0.1:{self.wal_port}"

    @property
    def ready_file(self) -> Path:
        return self.work_dir / "ready.json"

    @property
    def stderr_path(self) -> Path:
        return self.work_dir / f"stderr.{self.starts}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def args(self) -> list[str]:
        args = [
            *CLI, "serve",
            "--node-id", str(self.node_id),
            "--data-dir", str(self.data_dir),
            "--listen-http", f"127.0.0.1:{self.http_port}",
            "--listen-wal", f"127.0.0.1:{self.wal_port}",
            "--ready-file", str(self.ready_file),
            "--log-format", "json",
            "--heartbeat-timeout", "2s",
            "--peer-push-interval", "200ms",
        ]
        for peer_id, url in sorted(self.peers.items()):
            args += ["--peer", f"{peer_id}={url}"]
        return [*args, *self.extra_args]

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text()
        except FileNotFoundError:
            return ""

    async def start(self, *, timeout: float = READY_TIMEOUT) -> None:
        """Start the process and wait for its ready file (fail with its stderr)."""
        assert not self.running, f"node {self.node_id} is already running"
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
                if process.returncode is not None or process.poll() is not None:
                    raise AssertionError(
                        f"node {self.node_id} exited with {process.returncode} before ready:\n"
                        f"{self.stderr()}"
                    )
                await trio.sleep(0.02)
            ready = json.loads(self.ready_file.read_text())
            assert ready["pid"] == process.pid
            assert ready["http"] == self.http_url, ready
            assert ready["wal"] == self.wal_url, ready
            return
        self.kill_now()
        raise AssertionError(
            f"node {self.node_id} not ready within {timeout}s:\n{self.stderr()}"
        )

    def kill_now(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.kill()

    async def kill(self) -> None:
        """SIGKILL and reap (a crash: nothing is flushed or persisted)."""
        assert self.process is not None
        self.kill_now()
        with trio.fail_after(STOP_TIMEOUT):
            await self.process.wait()

    async def terminate(self, *, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, wait, and assert a clean exit 0."""
        assert self.process is not None, f"node {self.node_id} was never started"
        assert self.running, f"node {self.node_id} is not running"
        self.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(timeout):
            code = await self.process.wait()
            assert code == 0, f"node {self.node_id} exited {code} on SIGTERM:\n{self.stderr()}"
            return
        self.kill_now()
        raise AssertionError(
            f"node {self.node_id} ignored SIGTERM for {timeout}s:\n{self.stderr()}"
        )

    async def restart(self, *, graceful: bool = False) -> None:
        if self.running:
            await (self.terminate() if graceful else self.kill())
        await self.start()

    def client(self, token: str | None = None) -> SafekeeperClient:
        return SafekeeperClient(self.http_url, token=token, timeout=10.0)


class Cluster:
    """``n`` nodes (ids 1..n) that know each other as peers. Start with :meth:`start`."""

    def __init__(
        self, work_dir: Path, n: int, *, extra_args: Sequence[str] = (),
        token: str | None = None,
    ) -> None:
        ports = allocate_ports(2 * n)
        self.work_dir = work_dir
        self.token = token
        """Sent by the harness's own HTTP requests (auth tests)."""
        self.nodes: dict[int, NodeProcess] = {}
        for i in range(1, n + 1):
            self.nodes[i] = NodeProcess(
                i, work_dir / f"sk{i}", ports[2 * i - 2], ports[2 * i - 1],
                extra_args=list(extra_args),
            )
        for node in self.nodes.values():
            node.peers = {p.node_id: p.http_url for p in self.nodes.values() if p is not node}

    def __getitem__(self, node_id: int) -> NodeProcess:
        return self.nodes[node_id]

    @property
    def wal_urls(self) -> str:
        """``--safekeepers`` style: comma-separated WAL URLs of every node."""
        return ",".join(n.wal_url for n in self.nodes.values())

    async def start(self, ids: Sequence[int] | None = None) -> None:
        async with trio.open_nursery() as nursery:
            for node_id in ids or list(self.nodes):
                nursery.start_soon(self._start_one, self.nodes[node_id])

    @staticmethod
    async def _start_one(node: NodeProcess) -> None:
        await node.start()

    async def aclose(self) -> None:
        """Kill every child still running (fixture teardown)."""
        for node in self.nodes.values():
            if node.running:
                await node.kill()

    async def create_timeline(
        self, ttid: TenantTimelineId, start_lsn: Lsn = DEFAULT_START_LSN,
        *, wal_seg_size: int = SEG_SIZE, ids: Sequence[int] | None = None,
    ) -> None:
        for node_id in ids or list(self.nodes):
            async with self.nodes[node_id].client(self.token) as client:
                await client.create_timeline(ttid, start_lsn, wal_seg_size=wal_seg_size)

    async def status(self, node_id: int, ttid: TenantTimelineId) -> dict[str, object]:
        async with self.nodes[node_id].client(self.token) as client:
            return await client.timeline_status(ttid)

    async def flush_lsn(self, node_id: int, ttid: TenantTimelineId) -> Lsn:
        return Lsn.parse(str((await self.status(node_id, ttid))["flush_lsn"]))

    async def digest(
        self, node_id: int, ttid: TenantTimelineId, from_lsn: Lsn, until_lsn: Lsn
    ) -> str:
        async with self.nodes[node_id].client(self.token) as client:
            return await client.digest(ttid, from_lsn, until_lsn)

    async def propose(self, *args: str, timeout: float = 120.0) -> ProcessResult:
        return await run_cli("propose", *args, timeout=timeout)

    async def start_propose(self, name: str, *args: str) -> BackgroundCli:
        return await start_cli(self.work_dir, name, "propose", *args)
