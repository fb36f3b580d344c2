"""Real ``safekeeper-recovery serve`` processes on loopback, for tests, the demo and the
benchmarks (and for library users' own tests): one launcher.

* :func:`allocate_ports` never hands out one port twice in a process.
* :class:`NodeProcess` starts a ``serve`` child and waits for its ready file with a
  deadline; ``kill`` (a crash), ``terminate`` (graceful, must exit 0), ``stop``,
  ``restart``; every failure names the node and ends with its log.
* :class:`Cluster` plans ``n`` nodes that know each other as peers.
* :func:`run_cli` / :func:`start_cli` run other commands (``propose``, ``verify``, …).
* :func:`wait_until` waits on a condition with a deadline.
* :func:`make_ttid` and :data:`MiB`: identifiers and sizes, spelled once.

Importing this module starts nothing.
"""

from ._cli import CLI, BackgroundCli, ProcessResult, run_cli, start_cli
from ._cluster import DEFAULT_START_LSN, SEG_SIZE, Cluster
from ._ids import MiB, make_ttid
from ._node import READY_TIMEOUT, STOP_TIMEOUT, TEST_PEER_TIMING, NodeProcess, NodeProcessError
from ._ports import PortAllocator, allocate_ports
from ._wait import WaitTimeout, wait_until

__all__ = [
    "BackgroundCli",
    "CLI",
    "Cluster",
    "DEFAULT_START_LSN",
    "MiB",
    "NodeProcess",
    "NodeProcessError",
    "PortAllocator",
    "ProcessResult",
    "READY_TIMEOUT",
    "SEG_SIZE",
    "STOP_TIMEOUT",
    "TEST_PEER_TIMING",
    "WaitTimeout",
    "allocate_ports",
    "make_ttid",
    "run_cli",
    "start_cli",
    "wait_until",
]
