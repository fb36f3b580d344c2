"""Real ``serve`` processes on loopback, for the demo and the benchmarks.

Ports are allocated up front (bind to port 0, read the number, close) so every node can be
told its peers before any starts, and a restarted node keeps its addresses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import attrs
import trio

__all__ = ["LocalCluster", "LocalNode", "free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@attrs.define
class LocalNode:
    """One ``safekeeper-recovery serve`` child process."""

    node_id: int
    work_dir: Path
    http_port: int
    wal_port: int
    peers: dict[int, str]
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    """The address both ports listen on."""
    launcher: tuple[str, ...] = ()
    """Prefix of the command line, e.g. ``ip netns exec NS`` (it must exec the node, so
    that the process's pid is the node's)."""

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def wal_url(self) -> str:
        return f"ws://{self.host}:{self.wal_port}"

    @property
    def ready_file(self) -> Path:
        return self.work_dir / "ready.json"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "node.log"

    def command(self) -> list[str]:
        cmd = [
            *self.launcher, sys.executable, "-m", "safekeeper_recovery", "serve",
            "--node-id", str(self.node_id),
            "--data-dir", str(self.work_dir / "data"),
            "--listen-http", f"{self.host}:{self.http_port}",
            "--listen-wal", f"{self.host}:{self.wal_port}",
            "--ready-file", str(self.ready_file),
            "--log-format", "json",
        ]
        for peer, url in sorted(self.peers.items()):
            cmd += ["--peer", f"{peer}={url}"]
        return cmd + list(self.extra_args)

    async def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until both its ports listen (its ready file)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(  # noqa: ASYNC220  (spawning is quick; waiting is async)
            self.command(), stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        with trio.fail_after(timeout):
            while not self.ready_file.exists():
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"node {self.node_id} exited with {self.process.returncode}; "
                        f"log: {self.log_file}\n{self.tail_log()}"
                    )
                await trio.sleep(0.05)

    def tail_log(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def stop(self, *, kill: bool = False, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful) or SIGKILL, then wait. Returns the exit code."""
        if self.process is None:
            return None
        proc = self.process
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        with trio.fail_after(timeout):
            while proc.poll() is None:  # noqa: ASYNC110  (no async wait on a Popen)
                await trio.sleep(0.02)
        self.process = None
        return proc.returncode


@attrs.define
class LocalCluster:
    """``n`` nodes that know each other, under ``root``."""

    root: Path
    nodes: dict[int, LocalNode]

    @classmethod
    def plan(cls, root: Path, n: int = 3, extra_args: tuple[str, ...] = ()) -> LocalCluster:
        ports = {i: (free_port(), free_port()) for i in range(1, n + 1)}
        urls = {i: f"http://127.0.0.1:{h}" for i, (h, _) in ports.items()}
        nodes = {
            i: LocalNode(
                node_id=i,
                work_dir=root / f"sk{i}",
                http_port=h,
                wal_port=w,
                peers={j: u for j, u in urls.items() if j != i},
                extra_args=extra_args,
            )
            for i, (h, w) in ports.items()
        }
        return cls(root, nodes)

    def __getitem__(self, node_id: int) -> LocalNode:
        return self.nodes[node_id]

    async def stop_all(self) -> None:
        for node in self.nodes.values():
            if node.running:
                await node.stop(kill=True)

    def kill_all_now(self) -> None:
        """Synchronous last resort (atexit, finally blocks outside trio)."""
        for node in self.nodes.values():
            if node.process is not None and node.process.poll() is None:
                os.kill(node.process.pid, signal.SIGKILL)
                node.process.wait()


def read_ready(node: LocalNode) -> dict[str, object]:
    doc: dict[str, object] = json.loads(node.ready_file.read_text())
    return doc
