"""``safekeeper_recovery.testing``: the one launcher of node processes (issue 13, item 6)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from safekeeper_recovery.testing import (
    Cluster,
    NodeProcess,
    NodeProcessError,
    PortAllocator,
    WaitTimeout,
    allocate_ports,
    wait_until,
)


class _ScriptedKernel(PortAllocator):
    """A kernel that offers the ports of ``script`` in order (a closed port is free again,
    so a real kernel may offer it again too)."""

    def __init__(self, script: list[int]) -> None:
        super().__init__()
        self._script: Iterator[int] = iter(script)

    def _bind_any(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", next(self._script)))
        return s


def test_a_port_once_handed_out_is_skipped_when_offered_again() -> None:
    p, q, r = allocate_ports(3)
    allocator = _ScriptedKernel([p, p, q, p, q, r])
    assert allocator.allocate(1) == [p]
    assert allocator.allocate(1) == [q]  # p offered again: skipped
    assert allocator.allocate(1) == [r]


def test_allocate_ports_never_repeats_across_calls() -> None:
    ports = [port for _ in range(50) for port in allocate_ports(4)]
    assert len(set(ports)) == len(ports) == 200


async def test_wait_until_returns_once_the_condition_holds(autojump_clock: object) -> None:
    calls = 0

    async def third_time() -> bool:
        nonlocal calls
        calls += 1
        return calls == 3

    await wait_until(third_time, 10)
    assert calls == 3


async def test_wait_until_fails_at_its_deadline_naming_the_condition(
        autojump_clock: object) -> None:
    start = trio.current_time()
    with pytest.raises(WaitTimeout, match="timed out after 5s waiting for the moon"):
        await wait_until(lambda: False, 5, message="the moon")
    assert trio.current_time() - start == pytest.approx(5, abs=0.1)
    assert issubclass(WaitTimeout, AssertionError)  # a failed wait is a failed test


def test_a_cluster_knows_every_other_node_as_a_peer(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3)
    ports = {p for node in cluster.nodes.values() for p in (node.http_port, node.wal_port)}
    assert len(ports) == 6
    for i, node in cluster.nodes.items():
        args = node.args()
        peers = [args[k + 1] for k, arg in enumerate(args) if arg == "--peer"]
        assert peers == [f"{j}={cluster[j].http_url}" for j in (1, 2, 3) if j != i]


async def test_a_node_that_cannot_listen_fails_to_start_with_its_log(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http_port = taken.getsockname()[1]
        (wal_port,) = allocate_ports(1)
        node = NodeProcess(1, tmp_path, http_port, wal_port)
        with pytest.raises(NodeProcessError, match=r"node 1 exited with [1-9][0-9]* before ready"
                           ) as info:
            await node.start(timeout=60)
    assert str(http_port) in str(info.value)  # the node's own error line, from its log
    assert not node.running


class _Bound:
    """What ``_bind_any`` returns, without a socket: a port that is never really bound."""

    def __init__(self, port: int) -> None:
        self._port = port

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self._port)

    def close(self) -> None:
        pass


class _OfferingKernel(PortAllocator):
    def __init__(self, offers: list[int]) -> None:
        super().__init__()
        self._offers: Iterator[int] = iter(offers)

    def _bind_any(self) -> socket.socket:
        return _Bound(next(self._offers))  # type: ignore[return-value]


def test_parallel_test_workers_never_share_a_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under pytest-xdist, worker I of N takes only ports with (p // 2) % N == I: the kernel
    may offer a port one worker just released to another, which must not take it. (Linux
    gives bind(0) even ports only, so the split must not be by parity.)"""
    offers = list(range(40000, 40008))
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    for worker in (0, 1):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{worker}")
        mine = [x for x in offers if (x // 2) % 2 == worker]
        assert _OfferingKernel(offers).allocate(4) == mine
        assert any(x % 2 == 0 for x in mine), "each worker must get even ports too"
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert _OfferingKernel(offers).allocate(4) == offers[:4]  # one process: every port
