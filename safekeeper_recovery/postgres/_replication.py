"""A physical replication client for trio, on psycopg's libpq layer (``psycopg.pq``).

Theory of operation
-------------------
libpq runs in non-blocking mode; whenever it would block we wait on its socket with
``trio.lowlevel.wait_readable`` / ``wait_writable``, so one task streams WAL without a
thread. :func:`open_replication` connects with ``replication=true`` (the walsender
protocol); commands (``IDENTIFY_SYSTEM``, ``SHOW``, ``READ_REPLICATION_SLOT``,
``CREATE_REPLICATION_SLOT``) are simple queries; ``START_REPLICATION`` turns the
connection into COPY BOTH, after which :meth:`ReplicationConnection.receive` yields
:class:`XLogData` and :class:`Keepalive` messages and
:meth:`ReplicationConnection.send_status` sends standby status updates ('r').

Rules
-----
R1  Every wait has a deadline (``timeout`` seconds): a silent server is a
    :class:`ReplicationError`, never a hang.
R2  Server errors surface as :class:`ReplicationError` carrying the server's message (server
    gone, slot missing, authentication refused, ...).
R3  XLogData must be contiguous: a message that does not start where the last one ended is a
    protocol error (we never skip or repeat WAL).
"""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, final

import attrs
import psycopg
import trio
from psycopg import pq

from ..core import Lsn, SafekeeperError

__all__ = [
    "Keepalive",
    "PostgresIdentity",
    "ReplicationConnection",
    "ReplicationError",
    "SlotInfo",
    "XLogData",
    "open_replication",
    "parse_size_setting",
]

DEFAULT_TIMEOUT: Final = 30.0
_PG_EPOCH_OFFSET_US: Final = 946_684_800 * 1_000_000  # 2000-01-01 in Unix microseconds
_XLOGDATA_HEAD: Final = struct.Struct("!cQQq")
_KEEPALIVE: Final = struct.Struct("!cQqB")
_STATUS: Final = struct.Struct("!cQQQqB")


class ReplicationError(SafekeeperError):
    """Talking to PostgreSQL over the replication protocol failed (R2: the server's text)."""


@final
@attrs.frozen
class PostgresIdentity:
    """What a safekeeper timeline needs to know about the server it takes WAL from."""

    system_id: int
    timeline: int
    """The server's current timeline (TLI)."""
    xlogpos: Lsn
    """The server's flush position when asked."""
    pg_version: int
    """``server_version_num``, e.g. 150018."""
    wal_seg_size: int


@final
@attrs.frozen
class SlotInfo:
    name: str
    restart_lsn: Lsn | None
    """None while the slot reserves no WAL."""


@final
@attrs.frozen
class XLogData:
    """WAL bytes ``start .. start + len(data)``; ``wal_end`` is the server's end of WAL."""

    start: Lsn
    wal_end: Lsn
    data: bytes

    @property
    def end(self) -> Lsn:
        return self.start + len(self.data)


@final
@attrs.frozen
class Keepalive:
    wal_end: Lsn
    reply_requested: bool


def parse_size_setting(value: str) -> int:
    """A size GUC as ``SHOW`` prints it (``16MB``, ``1GB``, ``8192``) in bytes."""
    units = {"kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4, "B": 1}
    for unit, factor in units.items():
        if value.endswith(unit) and value[: -len(unit)].isdigit():
            return int(value[: -len(unit)]) * factor
    if value.isdigit():
        return int(value)
    raise ReplicationError(f"cannot parse the size setting {value!r}")


def _now_pg_us() -> int:
    return time.time_ns() // 1000 - _PG_EPOCH_OFFSET_US


class ReplicationConnection:
    """One walsender connection. Make it with :func:`open_replication`."""

    def __init__(self, conn: pq.abc.PGconn, timeout: float) -> None:
        self._conn = conn
        self._timeout = timeout
        self._streaming = False
        self._next: Lsn | None = None

    @property
    def server_version(self) -> int:
        return int(self._conn.server_version)

    # ---- plumbing ------------------------------------------------------------------------

    def _error(self, what: str) -> ReplicationError:
        text = self._conn.error_message.decode(errors="replace").strip()
        return ReplicationError(f"{what}: {text or 'connection lost'}")

    async def _flush(self) -> None:
        with trio.fail_after(self._timeout):
            while True:
                rc = self._conn.flush()
                if rc == 0:
                    return
                if rc < 0:
                    raise self._error("sending to PostgreSQL failed")
                await trio.lowlevel.wait_writable(self._conn.socket)

    async def _wait_readable(self, timeout: float | None = None) -> bool:
        """Wait for input and read it; False if ``timeout`` passed first (no timeout: R1)."""
        with trio.move_on_after(self._timeout if timeout is None else timeout) as scope:
            await trio.lowlevel.wait_readable(self._conn.socket)
        if scope.cancelled_caught:
            if timeout is not None:
                return False
            raise ReplicationError(f"PostgreSQL sent nothing for {self._timeout}s")
        try:
            self._conn.consume_input()
        except psycopg.Error:
            raise self._error("reading from PostgreSQL failed") from None
        return True

    async def _results(self) -> list[pq.abc.PGresult]:
        results: list[pq.abc.PGresult] = []
        while True:
            while self._conn.is_busy():
                await self._wait_readable()
            res = self._conn.get_result()
            if res is None:
                return results
            results.append(res)
            if res.status == pq.ExecStatus.COPY_BOTH:
                return results  # no terminating NULL result while copying

    async def query(self, command: str) -> list[tuple[str | None, ...]]:
        """Run one replication command; its rows as text (``ReplicationError`` on failure)."""
        if self._streaming:
            raise ReplicationError("the connection is streaming; no more commands")
        try:
            self._conn.send_query(command.encode())
        except psycopg.Error:
            raise self._error(f"{command} failed") from None
        await self._flush()
        rows: list[tuple[str | None, ...]] = []
        for res in await self._results():
            if res.status == pq.ExecStatus.FATAL_ERROR:
                msg = res.error_message.decode(errors="replace").strip()
                raise ReplicationError(f"{command} failed: {msg}")
            for r in range(res.ntuples):
                row = tuple(
                    None if (v := res.get_value(r, c)) is None else bytes(v).decode()
                    for c in range(res.nfields)
                )
                rows.append(row)
        return rows

    # ---- commands ------------------------------------------------------------------------

    async def identify(self) -> PostgresIdentity:
        """``IDENTIFY_SYSTEM`` plus the version and WAL segment size."""
        rows = await self.query("IDENTIFY_SYSTEM")
        if len(rows) != 1 or rows[0][0] is None or rows[0][1] is None or rows[0][2] is None:
            raise ReplicationError(f"unexpected IDENTIFY_SYSTEM answer {rows!r}")
        system_id, tli, xlogpos = rows[0][0], rows[0][1], rows[0][2]
        seg = await self.query("SHOW wal_segment_size")
        seg_size = parse_size_setting(seg[0][0] or "") if seg else 0
        return PostgresIdentity(
            int(system_id), int(tli), Lsn.parse(xlogpos), self.server_version, seg_size
        )

    async def read_slot(self, name: str) -> SlotInfo | None:
        """The physical slot ``name`` (``READ_REPLICATION_SLOT``), or None if it is missing."""
        rows = await self.query(f"READ_REPLICATION_SLOT {_ident(name)}")
        if not rows or rows[0][0] is None:
            return None
        if rows[0][0] != "physical":
            raise ReplicationError(f"replication slot {name!r} is {rows[0][0]}, not physical")
        restart = rows[0][1]
        return SlotInfo(name, Lsn.parse(restart) if restart else None)

    async def create_slot(self, name: str) -> SlotInfo:
        """Create the physical slot ``name`` with its WAL reserved from now on."""
        await self.query(f"CREATE_REPLICATION_SLOT {_ident(name)} PHYSICAL RESERVE_WAL")
        slot = await self.read_slot(name)
        if slot is None or slot.restart_lsn is None:
            raise ReplicationError(f"slot {name!r} was created but reserves no WAL")
        return slot

    async def start_replication(self, slot: str, start: Lsn, timeline: int) -> None:
        """``START_REPLICATION SLOT slot PHYSICAL start TIMELINE tli``: streaming from
        ``start`` (the server refuses a position whose WAL it no longer has)."""
        command = f"START_REPLICATION SLOT {_ident(slot)} PHYSICAL {start} TIMELINE {timeline}"
        try:
            self._conn.send_query(command.encode())
        except psycopg.Error:
            raise self._error(f"{command} failed") from None
        await self._flush()
        results = await self._results()
        last = results[-1] if results else None
        if last is None or last.status != pq.ExecStatus.COPY_BOTH:
            msg = last.error_message.decode(errors="replace").strip() if last else ""
            raise ReplicationError(f"{command} failed: {msg or 'no COPY BOTH'}")
        self._streaming = True
        self._next = start

    async def receive(self, timeout: float | None = None) -> XLogData | Keepalive | None:
        """The next XLogData or keepalive (R3 contiguity). Without ``timeout`` a silence of
        the connection's timeout is an error (R1); with it, None after ``timeout`` seconds."""
        if not self._streaming:
            raise ReplicationError("start_replication() first")
        while True:
            nbytes, buf = self._conn.get_copy_data(1)
            if nbytes > 0:
                return self._decode(bytes(buf))
            if nbytes == 0:
                if not await self._wait_readable(timeout):
                    return None
                continue
            self._streaming = False
            if nbytes == -1:  # the server ended the copy (e.g. timeline switch, shutdown)
                results = await self._results()
                msgs = [r.error_message.decode(errors="replace").strip() for r in results]
                raise ReplicationError(
                    "PostgreSQL ended the WAL stream" + (f": {'; '.join(m for m in msgs if m)}"
                                                         if any(msgs) else "")
                )
            raise self._error("receiving WAL failed")

    def _decode(self, msg: bytes) -> XLogData | Keepalive:
        kind = msg[:1]
        if kind == b"w" and len(msg) >= _XLOGDATA_HEAD.size:
            _, start, wal_end, _sent = _XLOGDATA_HEAD.unpack_from(msg)
            data = XLogData(Lsn(start), Lsn(wal_end), msg[_XLOGDATA_HEAD.size :])
            if self._next is not None and data.start != self._next:
                raise ReplicationError(
                    f"R3: XLogData starts at {data.start}, expected {self._next}"
                )
            self._next = data.end
            return data
        if kind == b"k" and len(msg) == _KEEPALIVE.size:
            _, wal_end, _sent, reply = _KEEPALIVE.unpack(msg)
            return Keepalive(Lsn(wal_end), bool(reply))
        raise ReplicationError(f"unexpected replication message {msg[:1]!r} ({len(msg)} bytes)")

    async def send_status(self, write: Lsn, flush: Lsn, *, reply: bool = False) -> None:
        """A standby status update: received up to ``write``, durable up to ``flush`` (the
        slot's restart point follows ``flush``)."""
        msg = _STATUS.pack(b"r", int(write), int(flush), int(flush), _now_pg_us(), int(reply))
        with trio.fail_after(self._timeout):
            while (rc := self._conn.put_copy_data(msg)) == 0:
                await trio.lowlevel.wait_writable(self._conn.socket)
        if rc < 0:
            raise self._error("sending a status update failed")
        await self._flush()


def _ident(name: str) -> str:
    if not name or not all(c.isalnum() or c == "_" for c in name) or len(name) > 63:
        raise ReplicationError(
            f"slot name {name!r}: use 1-63 letters, digits and underscores"
        )
    return name.lower()


def _conninfo_value(value: str) -> str:
    """``value`` quoted for a libpq ``key=value`` connection string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@asynccontextmanager
async def open_replication(
    conninfo: str, *, timeout: float = DEFAULT_TIMEOUT, application_name: str | None = None
) -> AsyncIterator[ReplicationConnection]:
    """Connect to PostgreSQL in physical replication mode (``replication=true`` is added to
    ``conninfo``); the connection is closed on exit. ``ReplicationError`` if the server is
    unreachable, refuses us, or takes longer than ``timeout`` seconds to answer.

    ``application_name`` is what the server calls us (``pg_stat_replication``, and the name
    ``synchronous_standby_names`` lists) unless ``conninfo`` sets its own."""
    extra = " replication=true"
    if application_name is not None:
        extra += f" fallback_application_name={_conninfo_value(application_name)}"
    conn = pq.PGconn.connect_start(f"{conninfo}{extra}".encode())
    try:
        if conn.status == pq.ConnStatus.BAD:
            raise ReplicationError(
                f"cannot connect to PostgreSQL: {conn.error_message.decode(errors='replace')}"
            )
        with trio.move_on_after(timeout) as scope:
            while True:
                state = conn.connect_poll()
                if state == pq.PollingStatus.OK:
                    break
                if state == pq.PollingStatus.FAILED:
                    raise ReplicationError(
                        "cannot connect to PostgreSQL: "
                        + conn.error_message.decode(errors="replace").strip()
                    )
                if state == pq.PollingStatus.READING:
                    await trio.lowlevel.wait_readable(conn.socket)
                else:
                    await trio.lowlevel.wait_writable(conn.socket)
        if scope.cancelled_caught:
            raise ReplicationError(f"connecting to PostgreSQL took longer than {timeout}s")
        conn.nonblocking = 1
        yield ReplicationConnection(conn, timeout)
    finally:
        conn.finish()
