"""In-process fake safekeepers driving the real ``core.Acceptor`` (WAL in a bytearray).

Every message goes through the binary codec, so the fakes also exercise encode/decode.
Faults: ``disk_full`` (appends carrying WAL refused with close code 4012),
``kill``/``restart`` a node, ``block`` one proposer from one node (refused connects,
existing connections reset), ``stall`` one proposer's WAL appends at an LSN on one node (they
never get processed, like a hung network).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from safekeeper_recovery.core import (
    Acceptor,
    AcceptorError,
    AcceptorMessage,
    AppendRequest,
    DiskUsageExceeded,
    FlushEffect,
    FlushWal,
    Lsn,
    NodeId,
    PersistEffect,
    PersistentState,
    ProposerMessage,
    RemoteProtocolError,
    ServerInfo,
    TenantId,
    Term,
    TimelineId,
    TruncateEffect,
    WriteEffect,
    decode_acceptor_message,
    decode_proposer_message,
    encode,
)
from safekeeper_recovery.proposer import Connect, FetchWal

TENANT = TenantId.parse("11" * 16)
TIMELINE = TimelineId.parse("22" * 16)
START = Lsn(0x100_0000)


class FakeSafekeeper:
    """One node: an Acceptor whose effects are applied to an in-memory WAL."""

    def __init__(self, node_id: int, start_lsn: Lsn = START) -> None:
        state = PersistentState.new_timeline(TENANT, TIMELINE, start_lsn, ServerInfo())
        self.node_id = NodeId(node_id)
        self.persisted = state
        self.base = start_lsn
        self.wal = bytearray()
        self.flushed = start_lsn
        self.acceptor = Acceptor(self.node_id, state, write_lsn=start_lsn, flush_lsn=start_lsn)
        self.up = True
        self.conns: set[FakeConnection] = set()
        self.disk_full = False
        """Refuse appends carrying WAL, as a node past --max-disk-usage does (close 4012)."""

    @property
    def flush_lsn(self) -> Lsn:
        return self.acceptor.flush_lsn

    def read(self, start: Lsn, end: Lsn) -> bytes:
        """Durable WAL ``start .. end`` (must be flushed)."""
        assert self.base <= start <= end <= self.flushed, (start, end, self.flushed)
        return bytes(self.wal[start - self.base : end - self.base])

    def durable_wal(self) -> bytes:
        return bytes(self.wal[: self.flushed - self.base])

    def handle(
        self, msg: ProposerMessage | FlushWal, *, flush: bool = True
    ) -> AcceptorMessage | None:
        step = self.acceptor.handle(msg, flush=flush)
        for effect in step.effects:
            match effect:
                case WriteEffect(lsn=lsn, data=data):
                    off = lsn - self.base
                    assert off == len(self.wal), "fake: writes are sequential"
                    self.wal += data
                case FlushEffect():
                    self.flushed = self.base + len(self.wal)
                case TruncateEffect(lsn=lsn):
                    del self.wal[lsn - self.base :]
                    self.flushed = min(self.flushed, lsn)
                case PersistEffect(state=state):
                    self.persisted = state
        return step.reply

    def kill(self) -> None:
        """Crash: drop connections, lose unflushed WAL, restart only on ``restart``."""
        self.up = False
        for conn in list(self.conns):
            conn.close(ConnectionResetError("connection reset by peer"))

    def restart(self) -> None:
        del self.wal[self.flushed - self.base :]
        self.acceptor = Acceptor(
            self.node_id, self.persisted, write_lsn=self.flushed, flush_lsn=self.flushed
        )
        self.up = True


class FakeConnection:
    def __init__(self, cluster: FakeCluster, proposer: str, url: str) -> None:
        self._cluster = cluster
        self._proposer = proposer
        self.url = url
        self._tx, self._rx = trio.open_memory_channel[AcceptorMessage | Exception](math.inf)
        self.closed = False
        self._unflushed = 0

    def close(self, error: Exception) -> None:
        if not self.closed:
            self.closed = True
            self._tx.send_nowait(error)

    async def send(self, msg: ProposerMessage) -> None:
        await trio.lowlevel.checkpoint()
        if self.closed:
            raise trio.BrokenResourceError("connection closed")
        stall = self._cluster.stalls.get((self._proposer, self.url))
        stalled = stall is not None and isinstance(msg, AppendRequest) and msg.begin_lsn >= stall
        if stalled and isinstance(msg, AppendRequest) and msg.data:
            if self._unflushed:  # the server drained its queue: it flushes and answers
                self._unflushed = 0
                self._reply(self._cluster.nodes[self.url].handle(FlushWal()))
            await trio.sleep_forever()
        node = self._cluster.nodes[self.url]
        if node.disk_full and isinstance(msg, AppendRequest) and msg.data:
            self.close(DiskUsageExceeded("WAL refused: disk usage 96% is past "
                                         "--max-disk-usage 95% (U2)"))
            return
        try:
            msg = decode_proposer_message(encode(msg))
            if self._cluster.batch and isinstance(msg, AppendRequest):
                # Like the real WAL port: no-flush appends, one fsync + reply per batch.
                node.handle(msg, flush=False)
                self._unflushed += 1
                batch_done = not msg.data or self._unflushed >= 3
                reply = node.handle(FlushWal()) if batch_done else None
                self._unflushed = 0 if batch_done else self._unflushed
            else:
                reply = node.handle(msg)
        except AcceptorError as e:  # the server closes with 4009 and the reason
            self.close(RemoteProtocolError(str(e), close_code=4009))
        else:
            self._reply(reply)

    def _reply(self, reply: AcceptorMessage | None) -> None:
        if reply is not None:
            self._tx.send_nowait(decode_acceptor_message(encode(reply)))
        self._cluster.notify()

    async def receive(self) -> AcceptorMessage:
        item = await self._rx.receive()
        if isinstance(item, Exception):
            self._tx.send_nowait(item)  # stays closed for the next caller
            raise item
        return item

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


class FakeCluster:
    def __init__(self, n: int = 3, *, batch: bool = False) -> None:
        self.batch = batch
        """Answer appends in batches (every third, or an empty one), as the WAL port does."""
        self.nodes = {f"ws://sk{i}": FakeSafekeeper(i) for i in range(1, n + 1)}
        self.urls = list(self.nodes)
        self.blocked: set[tuple[str, str]] = set()
        self.stalls: dict[tuple[str, str], Lsn] = {}
        self.connect_delays: dict[tuple[str, str], float] = {}
        """Seconds a connect from the proposer to the node takes (``math.inf``: it hangs,
        every packet dropped)."""
        self._event = trio.Event()

    def __getitem__(self, index: int) -> FakeSafekeeper:
        return self.nodes[self.urls[index]]

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, at most 10 s (then ``trio.TooSlowError``)."""
        with trio.fail_after(10):
            while not predicate():
                await self._event.wait()

    def block(self, proposer: str, index: int) -> None:
        url = self.urls[index]
        self.blocked.add((proposer, url))
        for conn in list(self.nodes[url].conns):
            if getattr(conn, "_proposer", None) == proposer:
                conn.close(ConnectionResetError("partitioned"))

    def unblock(self, proposer: str, index: int) -> None:
        self.blocked.discard((proposer, self.urls[index]))

    def stall(self, proposer: str, index: int, at: Lsn) -> None:
        self.stalls[(proposer, self.urls[index])] = at

    def connector(self, proposer: str) -> Connect:
        @asynccontextmanager
        async def connect(url: str) -> AsyncIterator[FakeConnection]:
            await trio.lowlevel.checkpoint()
            await trio.sleep(self.connect_delays.get((proposer, url), 0.0))
            node = self.nodes[url]
            if not node.up or (proposer, url) in self.blocked:
                raise ConnectionRefusedError(f"{url}: connection refused")
            conn = FakeConnection(self, proposer, url)
            node.conns.add(conn)
            try:
                yield conn
            finally:
                node.conns.discard(conn)
                conn.closed = True

        return connect

    def fetcher(self) -> FetchWal:
        async def fetch(url: str, start: Lsn, end: Lsn, term: Term) -> bytes:
            await trio.lowlevel.checkpoint()
            node = self.nodes[url]
            if not node.up:
                raise ConnectionRefusedError(f"{url}: connection refused")
            if node.acceptor.term != term:
                raise RemoteProtocolError(f"term changed: {node.acceptor.term}", close_code=4000)
            return node.read(start, end)

        return fetch
