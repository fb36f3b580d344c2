"""PostgreSQL on the proposer side: a physical replication client for trio, the ingest WAL
source that feeds a proposer from a live server, and a throw-away server for tests."""

from ._replication import (
    Keepalive,
    PostgresIdentity,
    ReplicationConnection,
    ReplicationError,
    SlotInfo,
    XLogData,
    open_replication,
    parse_size_setting,
)
from ._server import (
    PostgresError,
    PostgresServer,
    find_bindir,
    running_postgres,
    server_user_prefix,
    shared_tempdir,
)

__all__ = [
    "Keepalive",
    "PostgresError",
    "PostgresIdentity",
    "PostgresServer",
    "ReplicationConnection",
    "ReplicationError",
    "SlotInfo",
    "XLogData",
    "find_bindir",
    "open_replication",
    "parse_size_setting",
    "running_postgres",
    "server_user_prefix",
    "shared_tempdir",
]
