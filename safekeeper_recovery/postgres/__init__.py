"""PostgreSQL on the proposer side: a physical replication client for trio, the ingest WAL
source that feeds a proposer from a live server, and a throw-away server for tests."""

from ._ingest import DEFAULT_SLOT, IngestPlan, PostgresWalSource, prepare_ingest
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
from ._run import (
    CreateQuorumUnreachable,
    IngestInterrupted,
    IngestOptions,
    create_timelines,
    run_ingest,
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
    "CreateQuorumUnreachable",
    "DEFAULT_SLOT",
    "IngestInterrupted",
    "IngestOptions",
    "IngestPlan",
    "Keepalive",
    "PostgresError",
    "PostgresIdentity",
    "PostgresServer",
    "PostgresWalSource",
    "ReplicationConnection",
    "ReplicationError",
    "SlotInfo",
    "XLogData",
    "create_timelines",
    "find_bindir",
    "open_replication",
    "parse_size_setting",
    "prepare_ingest",
    "run_ingest",
    "running_postgres",
    "server_user_prefix",
    "shared_tempdir",
]
