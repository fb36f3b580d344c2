"""One real node (``serve_node``: WAL + HTTP on loopback, real files) in a background thread.

Hypothesis runs each example of an async test in its own ``trio.run``, so a node started
by a trio fixture would be rebuilt for every example. This one runs in its own thread and
trio loop for the whole module; examples reach it over loopback sockets only, like any
client would.
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path
from typing import Final

import httpx
import trio

from safekeeper_recovery.core import Lsn, NodeId, TenantId, TenantTimelineId, TimelineId
from safekeeper_recovery.node import NodeConfig, RunningNode, serve_node
from safekeeper_recovery.timeline import TimelineParams

START: Final = Lsn(0x100_0000)
SEG: Final = 1 << 20
TENANT: Final = TenantId(bytes(range(16)))
CONTROL_TIMELINE: Final = TimelineId(bytes(range(16, 32)))
"""A timeline no fuzz example writes to: the "node keeps serving" probe uses it."""
CONTROL_TTID: Final = TenantTimelineId(TENANT, CONTROL_TIMELINE)
STARTUP_TIMEOUT: Final = 30.0
_SSL: Final = ssl.create_default_context()
"""Built once: httpx builds one per client otherwise, which costs more than a request."""


class NodeThread:
    """``start()`` blocks until the node serves (and holds the control timeline);
    ``stop()`` cancels it and joins the thread."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fuzz-node", daemon=True)
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._error: BaseException | None = None
        self.running: RunningNode | None = None

    @property
    def wal_url(self) -> str:
        assert self.running is not None
        return self.running.wal_url

    @property
    def http_url(self) -> str:
        assert self.running is not None
        return self.running.http_url

    def http(self, timeout: float) -> httpx.AsyncClient:
        """An HTTP client for the node's API (plain HTTP; the SSL context is never used)."""
        return httpx.AsyncClient(base_url=self.http_url, timeout=timeout, verify=_SSL)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT):
            raise RuntimeError("the fuzz node did not start in time")
        if self._error is not None:
            raise RuntimeError("the fuzz node failed to start") from self._error

    def stop(self) -> None:
        if self._thread.is_alive() and self._token is not None and self._scope is not None:
            trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(STARTUP_TIMEOUT)
        if self._error is not None:
            raise RuntimeError("the fuzz node crashed") from self._error

    def restart(self) -> None:
        """Stop the node (gracefully) and start a new one on the same data directory: every
        timeline is loaded again from disk. The ports change."""
        self.stop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fuzz-node", daemon=True)
        self._token = self._scope = self.running = None
        self.start()

    def alive(self) -> bool:
        return self._thread.is_alive() and self._error is None

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as e:  # reported to the test thread by start()/stop()
            self._error = e
        finally:
            self._ready.set()

    async def _main(self) -> None:
        config = NodeConfig(
            node_id=NodeId(1),
            data_dir=self._data_dir,
            listen_http=("127.0.0.1", 0),
            listen_wal=("127.0.0.1", 0),
            recovery=False,
        )
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                running: RunningNode = await nursery.start(serve_node, config)
                await running.registry.create(CONTROL_TTID, TimelineParams(START, SEG))
                self.running = running
                self._ready.set()
