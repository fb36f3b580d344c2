"""Ingest: a proposer WAL source that streams physical WAL from a live PostgreSQL.

Theory of operation
-------------------
:func:`prepare_ingest` connects once, reads the server's identity (system id, timeline,
version, segment size) and makes sure the physical replication slot exists (created with
its WAL reserved). A new safekeeper timeline starts at the segment start of the slot's
``restart_lsn``, so the safekeepers' segments line up with the server's ``pg_wal``.

After the election the proposer makes a :class:`PostgresWalSource` at its term start (the
quorum's WAL end). The source streams from there through the slot, buffers what arrived
(``first .. available``), and tells the server in standby status updates that WAL is
durable only up to the proposer's quorum commit, so the slot keeps everything not yet
committed: a proposer killed at any moment resumes, after its next election, from the
cluster's WAL end without losing or repeating a byte.

Rules
-----
I1  Status updates report ``flush = apply = commit_lsn`` (never more); ``write`` is what
    was received. One is sent when the commit moves (at most every ``min_status_gap``
    seconds), also while the server sends nothing (a synchronous commit waits for exactly
    this update), when the server asks, and at least every ``status_interval`` seconds.
I2  The source ends (``final_end``) at ``stop_at`` (WAL past it is dropped), or at what it
    holds when :meth:`PostgresWalSource.finish` is called (SIGINT/SIGTERM).
I3  At most ``max_buffer`` bytes beyond the commit are held; then reading from the server
    pauses (TCP back-pressure) until the quorum catches up.
I4  Bytes more than ``retain`` below the commit are released; a safekeeper that needs them
    later gets them from its peers (proposer rule P3).
I5  The server must be the one the timeline was made for (same system id and timeline).
I6  The stream's ``application_name`` is the slot's name unless the conninfo sets one, so
    ``synchronous_standby_names`` can name the ingest: a synchronous commit on the server
    then returns only once a quorum of safekeepers has flushed it (I1 reports no more).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from contextlib import suppress
from typing import Final, final

import attrs
import trio

from ..core import Lsn
from ._replication import (
    Keepalive,
    PostgresIdentity,
    ReplicationConnection,
    ReplicationError,
    XLogData,
    open_replication,
)

__all__ = ["IngestPlan", "PostgresWalSource", "prepare_ingest"]

DEFAULT_SLOT: Final = "safekeeper_recovery"


class _StatusOwed(enum.Enum):
    OWED = enum.auto()


_STATUS_OWED: Final = _StatusOwed.OWED
"""A status update is owed now (I1): the commit moved while the server was silent."""
_TRIM_STEP: Final = 16 * 1024 * 1024


@final
@attrs.frozen
class IngestPlan:
    """The server and slot an ingest run streams from, and where a new timeline starts."""

    identity: PostgresIdentity
    slot: str
    slot_restart_lsn: Lsn
    created_slot: bool

    @property
    def timeline_start(self) -> Lsn:
        """Segment start of the slot's restart point: a new timeline's start_lsn."""
        seg = self.identity.wal_seg_size
        return Lsn(int(self.slot_restart_lsn) - int(self.slot_restart_lsn) % seg)


async def prepare_ingest(conninfo: str, slot: str = DEFAULT_SLOT, *,
                         timeout: float = 30.0) -> IngestPlan:
    """Identify the server and make sure ``slot`` exists with WAL reserved (created if
    missing). ``ReplicationError`` if the server is unreachable or the slot unusable."""
    async with open_replication(conninfo, timeout=timeout) as conn:
        identity = await conn.identify()
        info = await conn.read_slot(slot)
        created = info is None
        if info is None:
            info = await conn.create_slot(slot)
        if info.restart_lsn is None:
            raise ReplicationError(
                f"replication slot {slot!r} reserves no WAL: drop it or create it with "
                "RESERVE_WAL (pg_create_physical_replication_slot(name, true))"
            )
        return IngestPlan(identity, slot, info.restart_lsn, created)


class PostgresWalSource:
    """WAL from ``start`` on, streamed from the server through ``plan.slot`` (a proposer
    :class:`~safekeeper_recovery.proposer.StreamingWalSource`). :meth:`run` raises
    :class:`ReplicationError` when the server goes away, refuses the slot or the start, or
    is a different server (I5)."""

    def __init__(
        self,
        conninfo: str,
        plan: IngestPlan,
        start: Lsn,
        *,
        stop_at: Lsn | None = None,
        max_buffer: int = 64 * 1024 * 1024,
        retain: int = 16 * 1024 * 1024,
        status_interval: float = 1.0,
        min_status_gap: float = 0.005,
        timeout: float = 30.0,
    ) -> None:
        self._conninfo = conninfo
        self._plan = plan
        self._start = start
        self._stop_at = stop_at
        self._max_buffer = max_buffer
        self._retain = retain
        self._status_interval = status_interval
        self._min_status_gap = min_status_gap
        self._timeout = timeout
        self._first = start
        self._buf = bytearray()
        self._final: Lsn | None = None
        if stop_at is not None and stop_at <= start:
            self._final = start  # I2: nothing (more) to take
        self._commit = start
        self._reported: Lsn | None = None
        self._last_status = -math.inf
        self._commit_moved = trio.Event()
        self._notify: Callable[[], None] = lambda: None
        self.received_bytes = 0

    # ---- StreamingWalSource --------------------------------------------------------------

    @property
    def first(self) -> Lsn:
        return self._first

    @property
    def available(self) -> Lsn:
        return self._first + len(self._buf)

    @property
    def final_end(self) -> Lsn | None:
        return self._final

    def read_wal(self, start: Lsn, end: Lsn) -> bytes:
        if not self._first <= start <= end <= self.available:
            raise ValueError(f"read {start}..{end} outside {self._first}..{self.available}")
        return bytes(self._buf[start - self._first : end - self._first])

    def committed(self, commit_lsn: Lsn) -> None:
        if commit_lsn <= self._commit:
            return
        self._commit = commit_lsn
        self._commit_moved.set()
        self._commit_moved = trio.Event()
        # I4: release in big steps (a bytearray trim moves the rest).
        droppable = min(int(commit_lsn), int(self.available)) - self._retain - int(self._first)
        if droppable >= _TRIM_STEP:
            del self._buf[:droppable]
            self._first += droppable
            self._notify()

    def finish(self) -> None:
        """I2: end at what is held now (graceful stop)."""
        if self._final is None:
            self._final = self.available
            self._commit_moved.set()
            self._commit_moved = trio.Event()
            self._notify()

    # ---- streaming -----------------------------------------------------------------------

    def _append(self, msg: XLogData) -> None:
        data = msg.data
        if self._stop_at is not None and msg.end > self._stop_at:
            data = data[: max(0, self._stop_at - msg.start)]
        self._buf += data
        self.received_bytes += len(data)
        if self._stop_at is not None and self.available >= self._stop_at:
            self._final = self._stop_at

    async def _status(self, conn: ReplicationConnection, *, reply: bool = False) -> None:
        await conn.send_status(self.available, self._commit, reply=reply)
        self._reported = self._commit
        self._last_status = trio.current_time()

    def _status_due(self, now: float) -> bool:
        moved = self._commit != self._reported and now - self._last_status >= self._min_status_gap
        return moved or now - self._last_status >= self._status_interval

    async def run(self, notify: Callable[[], None]) -> None:
        """Stream until cancelled (status updates go on after the end, I1)."""
        self._notify = notify
        if self._final is not None:
            notify()
        plan = self._plan
        async with open_replication(self._conninfo, timeout=self._timeout,
                                    application_name=plan.slot) as conn:  # I6
            ident = await conn.identify()
            if (ident.system_id, ident.timeline) != (
                plan.identity.system_id, plan.identity.timeline
            ):
                raise ReplicationError(
                    f"I5: server is system {ident.system_id} timeline {ident.timeline}, "
                    f"expected {plan.identity.system_id} timeline {plan.identity.timeline}"
                )
            await conn.start_replication(plan.slot, self._start, plan.identity.timeline)
            try:
                await self._stream(conn)
                await self._feedback(conn)
            finally:
                # Report the last commit, so the slot and the next run start from it.
                with trio.move_on_after(1.0, shield=True), suppress(
                    ReplicationError, trio.TooSlowError
                ):
                    await self._status(conn)

    async def _stream(self, conn: ReplicationConnection) -> None:
        silent_since = trio.current_time()
        while self._final is None:
            if self.available - max(self._commit, self._first) >= self._max_buffer:  # I3
                with trio.move_on_after(self._status_interval):
                    await self._commit_moved.wait()
                await self._status(conn)
                continue
            msg = await self._next_message(conn)
            now = trio.current_time()
            if msg is _STATUS_OWED:
                await self._status(conn)
                continue
            if msg is None:
                if now - silent_since > self._timeout:
                    raise ReplicationError(f"PostgreSQL sent nothing for {self._timeout}s")
                await self._status(conn, reply=True)  # the answer proves it is alive
                continue
            silent_since = now
            if isinstance(msg, XLogData):
                self._append(msg)
                self._notify()
                if self._status_due(now):
                    await self._status(conn)
            elif msg.reply_requested or self._status_due(now):
                await self._status(conn)

    async def _next_message(
        self, conn: ReplicationConnection
    ) -> XLogData | Keepalive | _StatusOwed | None:
        """The next message; ``_STATUS_OWED`` once the commit moved past what was reported
        and ``min_status_gap`` has passed (I1: also while the server sends nothing, as it
        does when its commits wait for us, synchronous replication); None after
        ``status_interval`` of silence."""
        msg = await conn.receive(timeout=0)  # what has arrived already: the common case
        if msg is not None:
            return msg
        if self._commit != self._reported:
            gap = self._last_status + self._min_status_gap - trio.current_time()
            msg = await conn.receive(timeout=max(0.0, gap))
            return _STATUS_OWED if msg is None else msg
        moved = self._commit_moved
        got: list[XLogData | Keepalive | None] = []
        async with trio.open_nursery() as race:
            async def receive() -> None:
                got.append(await conn.receive(timeout=self._status_interval))
                race.cancel_scope.cancel()

            async def commit() -> None:
                await moved.wait()
                race.cancel_scope.cancel()

            race.start_soon(receive)
            race.start_soon(commit)
        if got:
            return got[0]
        # The commit moved: report it now, or once min_status_gap has passed.
        return await self._next_message(conn)

    async def _feedback(self, conn: ReplicationConnection) -> None:
        """After the end: report the commit as it moves until cancelled (I1)."""
        while True:
            with trio.move_on_after(self._status_interval):
                await self._commit_moved.wait()
            await self._status(conn)

