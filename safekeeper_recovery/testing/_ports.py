"""Free loopback TCP ports, handed out once per process, and never to two test workers."""

from __future__ import annotations

import os
import socket
import threading
from typing import Final

__all__ = ["PortAllocator", "allocate_ports"]

_MAX_TRIES: Final = 10_000


class PortAllocator:
    """Hands out free loopback TCP ports and never the same port twice.

    A port is "free" when binding port 0 on 127.0.0.1 returned it. Every socket of one call
    stays bound until the call has all its ports, so one call cannot get a port twice from
    the kernel; ports of earlier calls are remembered and skipped (a port closed by an
    earlier call is free again in the kernel's eyes, and a node planned with it may not
    have started yet). Another process may still take a port between this call and the
    node binding it: a node that cannot bind fails to start with a clear error.

    Under parallel test workers (pytest-xdist: ``PYTEST_XDIST_WORKER=gwI`` and
    ``PYTEST_XDIST_WORKER_COUNT=N``), worker I takes only ports ``p`` with
    ``(p // 2) % N == I``, so two workers never hand out the same port, whatever the
    kernel returns to each. (Not ``p % N``: Linux hands out even ports to ``bind`` and
    keeps the odd ones for ``connect``, so an odd-ports worker would never get one.)
    Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._given: set[int] = set()

    def allocate(self, n: int) -> list[int]:
        """``n`` distinct ports, none handed out before by this allocator."""
        ports: list[int] = []
        held: list[socket.socket] = []
        stride, offset = _worker_share()
        with self._lock:
            try:
                while len(ports) < n:
                    if len(held) >= _MAX_TRIES:
                        raise OSError(f"no free loopback port in {_MAX_TRIES} tries")
                    s = self._bind_any()
                    held.append(s)  # kept bound: the kernel will not return it again
                    port = int(s.getsockname()[1])
                    if port not in self._given and (port // 2) % stride == offset:
                        ports.append(port)
            finally:
                for s in held:
                    s.close()
            self._given.update(ports)
        return ports

    def _bind_any(self) -> socket.socket:
        """A socket bound to a port the kernel chose (a seam for tests)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", 0))
        except OSError:
            s.close()
            raise
        return s


_ALLOCATOR: Final = PortAllocator()


def allocate_ports(n: int) -> list[int]:
    """``n`` free loopback ports from the process-wide :class:`PortAllocator`."""
    return _ALLOCATOR.allocate(n)


def _worker_share() -> tuple[int, int]:
    """``(N, I)``: this process takes ports with ``(p // 2) % N == I`` (``(1, 0)``
    outside xdist)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count):
        return int(count), int(worker[2:]) % int(count)
    return 1, 0
