"""A test proposer: elects itself over a quorum of safekeepers and writes deterministic WAL.

``propose(config, connect)`` runs one proposer; the pure election and commit rules are in
``elect`` / ``quorum_commit_lsn`` / ``start_point``; ``WalGenerator`` makes the WAL
(or ``pgwal.SyntheticWal``; any ``WalSource`` through ``wal_source=``);
``sync_safekeepers`` commits what a quorum holds without writing (Neon's sync-safekeepers).
"""

from ._connection import Connect, FetchWal, SafekeeperConnection
from ._election import Election, elect, next_term, quorum_commit_lsn, quorum_size, start_point
from ._errors import LostQuorumError, NewerTermError, ProposerError
from ._paced import PacedWal, paced
from ._proposer import Proposer, propose
from ._results import (
    NodeStatistics,
    NodeStatus,
    Phase,
    ProposerConfig,
    ProposeResult,
    ProposerStatistics,
    WalFormat,
)
from ._source import AnyWalSourceFactory, StreamingWalSource
from ._sync import SyncResult, sync_safekeepers
from ._walgen import (
    BLOCK_SIZE,
    WalGenerator,
    WalSource,
    WalSourceFactory,
    chunk_end,
    wal_source_factory,
)
from ._websocket import websocket_connector, websocket_fetcher

__all__ = [
    "AnyWalSourceFactory",
    "BLOCK_SIZE",
    "Connect",
    "Election",
    "FetchWal",
    "LostQuorumError",
    "NewerTermError",
    "NodeStatistics",
    "NodeStatus",
    "PacedWal",
    "Phase",
    "ProposeResult",
    "Proposer",
    "ProposerConfig",
    "ProposerError",
    "ProposerStatistics",
    "SafekeeperConnection",
    "StreamingWalSource",
    "SyncResult",
    "WalFormat",
    "WalGenerator",
    "WalSource",
    "WalSourceFactory",
    "chunk_end",
    "elect",
    "next_term",
    "paced",
    "propose",
    "quorum_commit_lsn",
    "quorum_size",
    "start_point",
    "sync_safekeepers",
    "wal_source_factory",
    "websocket_connector",
    "websocket_fetcher",
]
