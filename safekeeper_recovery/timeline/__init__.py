"""One timeline (acceptor + storage + lock + notifications), its write pipeline (the
acceptor loop and flush policy) and read pipeline (the WAL sender), its WAL lifecycle
(archive upload and removal), and the registry."""

from ._backend import FileBackend, MemoryBackend, StorageBackend
from ._changes import ChangeFeed, Changes
from ._consumers import Consumer, ConsumerPositions
from ._disk_guard import DiskGuard, DiskGuardObserver, format_bytes
from ._inprocess_donor import InProcessDonorConnector, InProcessStream
from ._message_queue import PUSH_QUEUE_BYTES, MessageQueue
from ._peers import PEER_SILENCE_WAKE, PeerHub
from ._read_pipeline import pg_timestamp_us, run_wal_sender
from ._recovery_target import LocalSession, LocalTarget
from ._registry import (
    TimelineConflict,
    TimelineNotFound,
    TimelineParams,
    TimelineRegistry,
    TimelineService,
)
from ._snapshot import SNAPSHOT_CHUNK, receive_snapshot, snapshot_frames, snapshot_state
from ._staging import StagedTimeline
from ._timeline import (
    Receiver,
    TermMismatch,
    Timeline,
    TimelineBroken,
    TimelineObserver,
    TimelineSnapshot,
    describe_storage_failure,
)
from ._wal_lifecycle import (
    LifecycleConfig,
    LifecycleObserver,
    LifecycleReport,
    LifecycleStatus,
    lifecycle_step,
    read_segment,
    serve_wal_lifecycle,
    wal_lifecycle_service,
)
from ._watch import Watch
from ._write_pipeline import MessageSource, run_wal_acceptor

__all__ = [
    "ChangeFeed",
    "Changes",
    "Consumer",
    "ConsumerPositions",
    "DiskGuard",
    "DiskGuardObserver",
    "FileBackend",
    "InProcessDonorConnector",
    "InProcessStream",
    "LifecycleConfig",
    "LifecycleObserver",
    "LifecycleReport",
    "LifecycleStatus",
    "LocalSession",
    "LocalTarget",
    "MemoryBackend",
    "MessageQueue",
    "MessageSource",
    "PEER_SILENCE_WAKE",
    "PUSH_QUEUE_BYTES",
    "PeerHub",
    "Receiver",
    "SNAPSHOT_CHUNK",
    "StagedTimeline",
    "StorageBackend",
    "TermMismatch",
    "Timeline",
    "TimelineBroken",
    "TimelineConflict",
    "TimelineNotFound",
    "TimelineObserver",
    "TimelineParams",
    "TimelineRegistry",
    "TimelineService",
    "TimelineSnapshot",
    "Watch",
    "describe_storage_failure",
    "format_bytes",
    "lifecycle_step",
    "pg_timestamp_us",
    "read_segment",
    "receive_snapshot",
    "run_wal_acceptor",
    "run_wal_sender",
    "serve_wal_lifecycle",
    "snapshot_frames",
    "snapshot_state",
    "wal_lifecycle_service",
]
