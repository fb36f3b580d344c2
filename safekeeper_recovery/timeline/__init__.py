"""One timeline (acceptor + storage + lock + notifications) and the registry of all."""

from ._backend import FileBackend, MemoryBackend, StorageBackend
from ._changes import ChangeFeed, Changes
from ._peers import PEER_SILENCE_WAKE, PeerHub
from ._registry import (
    TimelineConflict,
    TimelineNotFound,
    TimelineParams,
    TimelineRegistry,
    TimelineService,
)
from ._timeline import (
    Receiver,
    TermMismatch,
    Timeline,
    TimelineBroken,
    TimelineObserver,
    TimelineSnapshot,
    describe_storage_failure,
)
from ._watch import Watch

__all__ = [
    "ChangeFeed",
    "Changes",
    "FileBackend",
    "MemoryBackend",
    "PEER_SILENCE_WAKE",
    "PeerHub",
    "Receiver",
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
]
