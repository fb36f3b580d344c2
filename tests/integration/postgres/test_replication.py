"""The replication client against a real PostgreSQL: identity, slots, streaming, errors."""

from __future__ import annotations

import pytest
import trio

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.postgres import (
    Keepalive,
    PostgresServer,
    ReplicationConnection,
    ReplicationError,
    XLogData,
    open_replication,
    parse_size_setting,
)


def test_parse_size_setting() -> None:
    assert parse_size_setting("16MB") == 16 << 20
    assert parse_size_setting("1GB") == 1 << 30
    assert parse_size_setting("8192") == 8192
    with pytest.raises(ReplicationError, match="cannot parse"):
        parse_size_setting("lots")


async def test_identify_reports_the_servers_system_id_version_and_segment_size(
    postgres: PostgresServer,
) -> None:
    async with open_replication(postgres.conninfo) as conn:
        ident = await conn.identify()
    sysid = await postgres.sql("SELECT system_identifier FROM pg_control_system()")
    assert ident.system_id == int(sysid)
    assert ident.timeline == 1
    assert ident.pg_version == int(await postgres.sql("SHOW server_version_num"))
    assert ident.wal_seg_size == 16 << 20


async def test_streamed_wal_equals_the_servers_pg_wal_bytes(postgres: PostgresServer) -> None:
    async with open_replication(postgres.conninfo) as conn:
        assert await conn.read_slot("s1") is None
        slot = await conn.create_slot("s1")
        assert slot.restart_lsn is not None
        await postgres.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g")
        end = await postgres.lsn("SELECT pg_current_wal_flush_lsn()")
        seg = 16 << 20
        start = Lsn(int(slot.restart_lsn) - int(slot.restart_lsn) % seg)
        await conn.start_replication("s1", start, 1)
        got = bytearray()
        with trio.fail_after(30):
            while start + len(got) < end:
                msg = await conn.receive()
                if isinstance(msg, XLogData):
                    assert msg.start == start + len(got)
                    got += msg.data
                else:
                    assert isinstance(msg, Keepalive)
        await conn.send_status(start + len(got), start + len(got))
    name = f"{1:08X}{int(start) >> 32:08X}{(int(start) & 0xFFFFFFFF) // seg:08X}"
    on_disk = (postgres.pg_wal / name).read_bytes()
    n = int(end) - int(start)
    assert bytes(got[:n]) == on_disk[:n]


async def test_missing_slot_is_a_clear_error(postgres: PostgresServer) -> None:
    async with open_replication(postgres.conninfo) as conn:
        with pytest.raises(ReplicationError, match='"nope" does not exist'):
            await conn.start_replication("nope", Lsn(0x1000000), 1)


async def test_refused_connection_is_a_clear_error(postgres: PostgresServer) -> None:
    with pytest.raises(ReplicationError, match="cannot connect"):
        async with open_replication(f"host=127.0.0.1 port={postgres.port} user=nobody_here"):
            pass


async def acknowledge_forever(conn: ReplicationConnection) -> None:
    """Receive and acknowledge everything (a shutting-down server waits for that)."""
    while True:
        msg = await conn.receive()
        if isinstance(msg, XLogData):
            await conn.send_status(msg.end, msg.end)


async def test_a_server_that_goes_away_mid_stream_is_a_clear_error(
    postgres: PostgresServer,
) -> None:
    async with open_replication(postgres.conninfo, timeout=10) as conn:
        slot = await conn.create_slot("gone")
        assert slot.restart_lsn is not None
        await conn.start_replication("gone", slot.restart_lsn, 1)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(postgres.stop)  # fast shutdown ends every walsender
                with pytest.raises(ReplicationError):
                    await acknowledge_forever(conn)
