"""The replication commands of the pg port, and ``START_REPLICATION``'s WAL stream.

Rules
-----
T1  ``IDENTIFY_SYSTEM`` answers the timeline's PostgreSQL system id, timeline 1, the
    commit position (the end of the WAL a client may read) and no database.
T2  ``SHOW`` knows ``wal_segment_size`` (``16MB`` style, as PostgreSQL shows it),
    ``server_version``, ``server_version_num``, ``integer_datetimes``,
    ``data_directory_mode`` (``0700``), ``timeline_id`` and ``tenant_id``; any other name
    is ERROR 42704.
T3  ``READ_REPLICATION_SLOT s`` answers ``physical``, the consumer's held position and
    timeline 1 for a consumer this timeline knows under slot ``s`` (``timeline``
    ``_consumers`` K1), else a row of nulls (no such slot), as PostgreSQL does.
    ``TIMELINE_HISTORY`` is ERROR 58P01: a safekeeper timeline is PostgreSQL timeline 1,
    which has no history file.
T4  ``START_REPLICATION`` (timeline absent or 1, else 55000) refuses a start below the
    WAL this node holds (58P01, naming the segment, as PostgreSQL does) and a start past
    its WAL end (``flush_lsn``: 55000); a start between the commit position and the WAL
    end waits for the commit. Then it streams committed WAL only
    (:func:`~safekeeper_recovery.timeline.run_wal_sender` without a term), following
    ``commit_lsn`` live, as XLogData; a keepalive with reply requested goes out after
    ``keepalive_interval`` seconds without data. WAL is read in chunks of
    ``_CHUNK_BYTES`` (served from the store's read-ahead) and sent as XLogData messages
    of at most ``_MESSAGE_BYTES`` (PostgreSQL's walsender size), each a header and a view
    of the chunk (no copy), written with vectored sends of everything queued
    (``PgConnection`` N3). Up to ``_IN_FLIGHT`` chunks wait between the sender and the
    socket, so reading the next chunk overlaps sending one.
T5  The client's standby status updates move its consumer entry (K2: its removal hold)
    and wake the timeline's watchers; hot standby feedback is ignored (no snapshots here).
T6  The stream ends when the client sends CopyDone (the server answers CopyDone and
    CommandComplete ``START_STREAMING``; the connection goes on), on Terminate or end of
    file, when the client sends nothing for ``idle_timeout`` (FATAL 57P05), or when the
    WAL it needs is removed under it (FATAL 58P01).
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio

from ..core import MAX_SEND_SIZE, Lsn, StreamSenderMessage, WalData, WalRemoved
from ..pgproto import (
    IDLE_SESSION_TIMEOUT,
    INT4_OID,
    OBJECT_NOT_IN_PREREQUISITE_STATE,
    PROTOCOL_VIOLATION,
    TEXT_OID,
    UNDEFINED_FILE,
    UNDEFINED_OBJECT,
    CopyData,
    CopyDone,
    CopyFail,
    HotStandbyFeedback,
    IdentifySystem,
    PgError,
    ReadReplicationSlot,
    ReplicationStartup,
    Show,
    StandbyStatusUpdate,
    StartReplication,
    Terminate,
    TimelineHistory,
    decode_copy_feedback,
    encode_command_complete,
    encode_copy_both_response,
    encode_copy_done,
    encode_data_row,
    encode_empty_query,
    encode_keepalive,
    encode_row_description,
    parse_command,
    xlog_data_header,
)
from ..timeline import Consumer, Timeline, run_wal_sender
from ._pg_connection import ClientGone, PgConnection

__all__ = [
    "PgStreamObserver",
    "run_command",
    "segment_file_name",
    "server_version_string",
    "show_size",
]

log = logging.getLogger(__name__)


class PgStreamObserver(Protocol):
    """Metrics of the pg port (``NodeMetrics`` is one)."""

    def pg_stream_started(self) -> None: ...

    def pg_stream_ended(self) -> None: ...

    def pg_wal_sent(self, nbytes: int) -> None: ...


def show_size(nbytes: int) -> str:
    """A size as PostgreSQL's SHOW prints it (``16MB``, ``1GB``, ``8kB``)."""
    for unit, scale in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if nbytes % scale == 0 and nbytes >= scale:
            return f"{nbytes // scale}{unit}"
    return f"{nbytes}B"


def segment_file_name(lsn: Lsn, seg_size: int, tli: int = 1) -> str:
    """The WAL segment file holding ``lsn`` (``000000010000000000000003``)."""
    segno = int(lsn) // seg_size
    per_id = 0x1_0000_0000 // seg_size
    return f"{tli:08X}{segno // per_id:08X}{segno % per_id:08X}"


async def _rows(conn: PgConnection, columns: list[tuple[str, int]],
                rows: list[list[str | None]], tag: str) -> None:
    await conn.send(encode_row_description(columns)
                    + b"".join(encode_data_row(r) for r in rows)
                    + encode_command_complete(tag))


async def run_command(
    timeline: Timeline,
    startup: ReplicationStartup,
    text: str,
    conn: PgConnection,
    *,
    keepalive_interval: float,
    idle_timeout: float,
    observer: PgStreamObserver | None = None,
) -> None:
    """Run one simple query (T1-T6). Raises :class:`PgError` (ERROR: the connection goes
    on; FATAL: it ends), :class:`ClientGone` when the client left mid-stream."""
    cmd = parse_command(text)
    snap = timeline.snapshot()
    match cmd:
        case None:
            await conn.send(encode_empty_query())
        case IdentifySystem():
            await _rows(conn, [("systemid", TEXT_OID), ("timeline", INT4_OID),
                               ("xlogpos", TEXT_OID), ("dbname", TEXT_OID)],
                        [[str(snap.system_id), "1", str(snap.commit_lsn), None]],
                        "IDENTIFY_SYSTEM")
        case Show(name=name):
            values = {
                "wal_segment_size": show_size(snap.wal_seg_size),
                "server_version": server_version_string(snap.pg_version),
                "server_version_num": str(snap.pg_version if snap.pg_version >= 100000
                                          else (snap.pg_version or 15) * 10000),
                "integer_datetimes": "on",
                "data_directory_mode": "0700",  # pg_receivewal makes its files with it
                "timeline_id": str(snap.ttid.timeline_id),
                "tenant_id": str(snap.ttid.tenant_id),
            }
            if name not in values:
                raise PgError(UNDEFINED_OBJECT, f'unrecognized configuration parameter "{name}"'
                              f" (this safekeeper shows {', '.join(sorted(values))})")
            await _rows(conn, [(name, TEXT_OID)], [[values[name]]], "SHOW")
        case ReadReplicationSlot(slot=slot):
            known = next((c for c in timeline.consumers.all() if c.slot == slot), None)
            row: list[str | None] = ([None, None, None] if known is None
                                     else ["physical", str(known.position), "1"])
            await _rows(conn, [("slot_type", TEXT_OID), ("restart_lsn", TEXT_OID),
                               ("restart_tli", INT4_OID)], [row], "READ_REPLICATION_SLOT")
        case TimelineHistory(timeline=tli):
            raise PgError(UNDEFINED_FILE,
                          f"could not open file \"{tli:08X}.history\": this safekeeper "
                          "serves PostgreSQL timeline 1 only, which has no history")
        case StartReplication():
            await _start_replication(timeline, startup, cmd, conn,
                                     keepalive_interval=keepalive_interval,
                                     idle_timeout=idle_timeout, observer=observer)


def server_version_string(pg_version: int) -> str:
    """``server_version`` as PostgreSQL reports it: ``150013`` -> ``15.13``; a bare major
    (``15``) -> ``15.0``; unknown (0) -> ``15.0``."""
    if pg_version >= 100000:
        return f"{pg_version // 10000}.{pg_version % 10000}"
    return f"{pg_version or 15}.0"


def _check_start(timeline: Timeline, cmd: StartReplication) -> None:
    """T4's refusals."""
    if cmd.timeline not in (None, 1):
        raise PgError(OBJECT_NOT_IN_PREREQUISITE_STATE,
                      f"requested timeline {cmd.timeline} is not in this server's history: "
                      "a safekeeper serves PostgreSQL timeline 1")
    snap = timeline.snapshot()
    first = max(snap.local_start_lsn, timeline.store.start_lsn)
    if cmd.start < first:
        raise PgError(UNDEFINED_FILE,
                      f"requested WAL segment {segment_file_name(cmd.start, snap.wal_seg_size)}"
                      f" has already been removed: this safekeeper holds WAL from {first} "
                      f"(requested start {cmd.start})")
    if cmd.start > snap.flush_lsn:
        raise PgError(OBJECT_NOT_IN_PREREQUISITE_STATE,
                      f"requested starting point {cmd.start} is ahead of the WAL flush "
                      f"position of this server {snap.flush_lsn}")


_IN_FLIGHT = 16
"""Chunks queued between the WAL sender and the socket writer (16 MiB a stream at most):
a window to ride out a busy disk while the client drains what is queued (our WAL comes
from the disk, the walsender's from the page cache; docs/postgres-port.md has the
figures, which do not separate it from 4 chunks beyond the noise of a shared machine)."""

_CHUNK_BYTES = MAX_SEND_SIZE
"""WAL per read (a ``WalData`` holds at most this)."""

_MESSAGE_BYTES = 128 * 1024
"""WAL per XLogData message: PostgreSQL's walsender sends at most this (MAX_SEND_SIZE)."""

_BATCH_BYTES = 8 << 20
"""The writer sends what is queued in one vectored write up to about this much."""


def _xlog_messages(data: WalData) -> list[bytes | memoryview]:
    """``data`` as XLogData messages of at most ``_MESSAGE_BYTES``: header, view, ..."""
    view = memoryview(data.data)
    parts: list[bytes | memoryview] = []
    for off in range(0, len(view), _MESSAGE_BYTES):
        piece = view[off:off + _MESSAGE_BYTES]
        parts.append(xlog_data_header(Lsn(data.start_lsn + off), data.wal_end,
                                      data.timestamp_us, len(piece)))
        parts.append(piece)
    return parts


class _StopSending(Exception):
    """The client sent CopyDone: the sender stops before its next message."""


async def _start_replication(
    timeline: Timeline,
    startup: ReplicationStartup,
    cmd: StartReplication,
    conn: PgConnection,
    *,
    keepalive_interval: float,
    idle_timeout: float,
    observer: PgStreamObserver | None,
) -> None:
    _check_start(timeline, cmd)
    await conn.send(encode_copy_both_response())
    copy_done = False
    in_send = False
    outcome: list[BaseException] = []

    with timeline.consumers.streaming(slot=cmd.slot, application_name=startup.application_name,
                                      remote=conn.remote, start_lsn=cmd.start) as consumer:
        log.info("pg port: %s streams timeline %s from %s as %s", conn.remote, timeline.ttid,
                 cmd.start, consumer.name)

        # The WAL sender reads and encodes the next chunks while the writer sends: a few
        # messages in flight overlap the disk with the socket.
        out_send, out_recv = trio.open_memory_channel[
            tuple[list[bytes | memoryview], int, Lsn | None]](_IN_FLIGHT)

        async def send(msg: StreamSenderMessage) -> None:
            if copy_done:
                raise _StopSending
            if isinstance(msg, WalData):
                await out_send.send((_xlog_messages(msg), len(msg.data),
                                     Lsn(msg.start_lsn + len(msg.data))))
            else:
                await out_send.send((
                    [encode_keepalive(msg.wal_end, msg.timestamp_us, msg.reply_requested)],
                    0, None))

        async def sender() -> None:
            async with out_send:  # closed when it ends: the writer sends what is queued
                try:
                    await run_wal_sender(timeline, cmd.start, None, send,
                                         keepalive_interval=keepalive_interval,
                                         max_chunk=_CHUNK_BYTES)
                except _StopSending:
                    pass
                except WalRemoved as e:
                    outcome.append(PgError(UNDEFINED_FILE, str(e), fatal=True))
                except Exception as e:  # re-raised below, after the nursery
                    outcome.append(e)

        async def writer(scope: trio.CancelScope) -> None:
            nonlocal in_send
            try:
                async for parts, nbytes, sent_to in out_recv:
                    # Everything already queued goes out in the same vectored write.
                    while nbytes < _BATCH_BYTES:
                        try:
                            more, more_bytes, more_to = out_recv.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break  # the async for sees the end next
                        parts += more
                        nbytes += more_bytes
                        if more_to is not None:
                            sent_to = more_to
                    in_send = True  # a cancel now would leave half a message on the wire
                    await conn.send_parts(parts)
                    in_send = False
                    if sent_to is not None:
                        if observer is not None:
                            observer.pg_wal_sent(int(sent_to) - int(consumer.sent_lsn))
                        consumer.sent_lsn = sent_to
                    if copy_done:
                        break
            except Exception as e:  # re-raised below, after the nursery
                outcome.append(e)
            scope.cancel()

        async def reader(scope: trio.CancelScope) -> None:
            nonlocal copy_done
            try:
                await _read_feedback(timeline, consumer, conn, idle_timeout)
            except Exception as e:  # re-raised below, after the nursery
                outcome.append(e)
                scope.cancel()
                return
            copy_done = True
            if not in_send:  # else the writer stops once its message is out
                scope.cancel()

        if observer is not None:
            observer.pg_stream_started()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                nursery.start_soon(writer, nursery.cancel_scope)
                nursery.start_soon(reader, nursery.cancel_scope)
        finally:
            if observer is not None:
                observer.pg_stream_ended()
            timeline.changed.notify()
    if outcome:
        raise outcome[0]
    # T6: the client ended the copy; we end ours and the command.
    await conn.send(encode_copy_done() + encode_command_complete("START_STREAMING"))


async def _read_feedback(timeline: Timeline, consumer: Consumer, conn: PgConnection,
                         idle_timeout: float) -> None:
    """Status updates until CopyDone (returns); raises ClientGone, PgError."""
    while True:
        msg = None
        with trio.move_on_after(idle_timeout):
            msg = await conn.receive()
        match msg:
            case None:
                raise PgError(IDLE_SESSION_TIMEOUT,
                              f"terminating replication connection: the client sent nothing "
                              f"for {idle_timeout:g} s (no reply to keepalives)", fatal=True)
            case CopyData(data=data):
                update = decode_copy_feedback(data)
                if isinstance(update, StandbyStatusUpdate):
                    consumer.write_lsn = update.write_lsn
                    consumer.flush_lsn = update.flush_lsn
                    consumer.apply_lsn = update.apply_lsn
                    timeline.changed.notify()
                else:
                    assert isinstance(update, HotStandbyFeedback)
            case CopyDone():
                return
            case CopyFail(message=message):
                raise PgError(PROTOCOL_VIOLATION, f"the client failed the copy: {message}",
                              fatal=True)
            case Terminate():
                raise ClientGone("the client terminated the connection")
            case _:
                raise PgError(PROTOCOL_VIOLATION,
                              f"unexpected {type(msg).__name__} while streaming", fatal=True)
