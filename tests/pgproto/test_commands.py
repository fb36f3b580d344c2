"""Startup parameters (Q1, Q2) and replication commands (Q3, Q4), parsed."""

from __future__ import annotations

import pytest

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.pgproto import (
    FEATURE_NOT_SUPPORTED,
    INVALID_AUTHORIZATION,
    SYNTAX_ERROR,
    IdentifySystem,
    PgError,
    ReadReplicationSlot,
    ReplicationStartup,
    Show,
    StartReplication,
    TimelineHistory,
    parse_command,
    parse_startup,
    split_options,
)

T, TL = "a" * 32, "b" * 32


def test_c2_tenant_and_timeline_from_options_in_each_spelling() -> None:
    for options in (f"-c tenant_id={T} -c timeline_id={TL}",
                    f"-ctenant_id={T}  -ctimeline_id={TL}",
                    f"--tenant-id={T} --timeline_id={TL} -c other=1"):
        got = parse_startup({"replication": "true", "options": options,
                             "application_name": "walreceiver", "user": "u"})
        assert got == ReplicationStartup(T, TL, "walreceiver", "u")


def test_split_options_honours_backslash_escapes() -> None:
    assert split_options(r"-c a=x\ y  -c b=\\z") == ["-c", "a=x y", "-c", "b=\\z"]


@pytest.mark.parametrize("replication", ["", "false", "0"])
def test_c1_non_replication_connections_are_refused(replication: str) -> None:
    params = {"options": f"-c tenant_id={T} -c timeline_id={TL}"}
    if replication:
        params["replication"] = replication
    with pytest.raises(PgError) as e:
        parse_startup(params)
    assert e.value.sqlstate == FEATURE_NOT_SUPPORTED
    assert e.value.fatal
    assert "replication=true" in e.value.message


def test_c1_logical_replication_is_refused() -> None:
    with pytest.raises(PgError, match="logical replication is not supported"):
        parse_startup({"replication": "database"})


def test_c2_missing_timeline_is_named() -> None:
    with pytest.raises(PgError) as e:
        parse_startup({"replication": "on", "options": f"-c tenant_id={T}"})
    assert e.value.sqlstate == INVALID_AUTHORIZATION
    assert "no timeline_id" in e.value.message


@pytest.mark.parametrize(("text", "cmd"), [
    ("IDENTIFY_SYSTEM", IdentifySystem()),
    ("identify_system;", IdentifySystem()),
    ("SHOW wal_segment_size", Show("wal_segment_size")),
    ('SHOW "Wal_Segment_Size"', Show("Wal_Segment_Size")),
    ("READ_REPLICATION_SLOT s1", ReadReplicationSlot("s1")),
    ("TIMELINE_HISTORY 2", TimelineHistory(2)),
    ("START_REPLICATION 0/3000000", StartReplication(None, Lsn(0x3000000), None)),
    ("START_REPLICATION PHYSICAL 1/0 TIMELINE 1", StartReplication(None, Lsn(1 << 32), 1)),
    ('START_REPLICATION SLOT "my slot" PHYSICAL 0/10 TIMELINE 1',
     StartReplication("my slot", Lsn(0x10), 1)),
    ("start_replication slot s physical 0/10", StartReplication("s", Lsn(0x10), None)),
])
def test_c3_commands(text: str, cmd: object) -> None:
    assert parse_command(text) == cmd


def test_empty_query() -> None:
    assert parse_command("  ;") is None
    assert parse_command("") is None


@pytest.mark.parametrize(("text", "sqlstate"), [
    ("SELECT 1", FEATURE_NOT_SUPPORTED),
    ("BASE_BACKUP", FEATURE_NOT_SUPPORTED),
    ("CREATE_REPLICATION_SLOT s PHYSICAL", FEATURE_NOT_SUPPORTED),
    ("START_REPLICATION SLOT s LOGICAL 0/0", FEATURE_NOT_SUPPORTED),
    ("START_REPLICATION", SYNTAX_ERROR),
    ("START_REPLICATION 0/1 TIMELINE 0", SYNTAX_ERROR),
    ("START_REPLICATION 0/1 TIMELINE 4294967296", SYNTAX_ERROR),
    ("START_REPLICATION 123456789/0", SYNTAX_ERROR),
    ("START_REPLICATION 0/1 EXTRA", SYNTAX_ERROR),
    ("IDENTIFY_SYSTEM now", SYNTAX_ERROR),
    ("SHOW", SYNTAX_ERROR),
])
def test_c3_c4_refusals_are_errors_not_fatal(text: str, sqlstate: str) -> None:
    with pytest.raises(PgError) as e:
        parse_command(text)
    assert e.value.sqlstate == sqlstate
    assert not e.value.fatal
