"""Rule I1 of the ingest's WAL source, on a fake replication connection and a mock clock: a
commit that moves while PostgreSQL sends nothing (its synchronous commits wait for exactly
this report) is reported within ``min_status_gap``, not at the next periodic status."""

from __future__ import annotations

import itertools
import math
from typing import cast

import trio
import trio.testing

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.postgres import (
    IngestPlan,
    PostgresIdentity,
    PostgresWalSource,
    ReplicationConnection,
    XLogData,
)

START = Lsn(0x100_0000)


class SilentServer:
    """A replication connection that sends what the test gives it and records statuses."""

    def __init__(self) -> None:
        self._tx, self._rx = trio.open_memory_channel[XLogData](math.inf)
        self.statuses: list[tuple[float, Lsn, bool]] = []

    def send_wal(self, msg: XLogData) -> None:
        self._tx.send_nowait(msg)

    async def receive(self, timeout: float | None = None) -> XLogData | None:
        with trio.move_on_after(math.inf if timeout is None else timeout):
            return await self._rx.receive()
        return None

    async def send_status(self, write: Lsn, flush: Lsn, *, reply: bool = False) -> None:
        await trio.lowlevel.checkpoint()
        self.statuses.append((trio.current_time(), flush, reply))


def as_connection(server: SilentServer) -> ReplicationConnection:
    # The source uses only receive() and send_status(), which the fake has.
    return cast("ReplicationConnection", server)


def source() -> PostgresWalSource:
    ident = PostgresIdentity(1, 1, START, 150000, 16 * 2**20)
    return PostgresWalSource("host=unused", IngestPlan(ident, "s", START, False), START,
                             status_interval=1.0, min_status_gap=0.005, timeout=30.0)


async def test_i1_a_commit_moved_while_the_server_is_silent_is_reported_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    src = source()
    server = SilentServer()
    async with trio.open_nursery() as nursery:
        # The loop run() drives after START_REPLICATION, on the fake connection.
        nursery.start_soon(src._stream, as_connection(server))
        server.send_wal(XLogData(START, START + 100, b"x" * 100))
        await trio.sleep(0.3)  # the server now waits for our report, sending nothing
        committed_at = trio.current_time()
        src.committed(START + 100)
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()
    reported = [t for t, flush, _ in server.statuses if flush == START + 100]
    assert reported, server.statuses
    assert reported[0] - committed_at <= 0.01, server.statuses  # not status_interval (1 s)


async def test_i1_reports_are_at_least_min_status_gap_apart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    src = source()
    server = SilentServer()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(src._stream, as_connection(server))
        server.send_wal(XLogData(START, START + 1000, b"x" * 1000))
        await trio.sleep(0.1)
        for i in range(1, 11):  # ten commits in 1 ms
            src.committed(START + 100 * i)
            await trio.sleep(0.0001)
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    times = [t for t, flush, _ in server.statuses if flush > START]
    assert times, server.statuses
    assert all(b - a >= 0.005 - 1e-9 for a, b in itertools.pairwise(times)), times
    assert server.statuses[-1][1] == START + 1000  # the last commit is reported too
