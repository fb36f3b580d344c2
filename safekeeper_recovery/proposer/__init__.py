"""A test proposer: elects itself over a quorum of safekeepers and writes deterministic WAL.

``propose(config, connect)`` runs one proposer; the pure election and commit rules are in
``elect`` / ``quorum_commit_lsn`` / ``start_point``; ``WalGenerator`` makes the WAL.
"""

from ._connection import Connect, FetchWal, SafekeeperConnection
from ._election import Election, elect, next_term, quorum_commit_lsn, quorum_size, start_point
from ._errors import LostQuorumError, NewerTermError, ProposerError
from ._proposer import Proposer, propose
from ._results import (
    NodeStatistics,
    NodeStatus,
    Phase,
    ProposerConfig,
    ProposeResult,
    ProposerStatistics,
)
from ._source import GeneratedWal, WalSource, WalSourceFactory
from ._walgen import BLOCK_SIZE, WalGenerator, chunk_end
from ._websocket import websocket_connector, websocket_fetcher

__all__ = [
    "BLOCK_SIZE",
    "Connect",
    "Election",
    "FetchWal",
    "GeneratedWal",
    "LostQuorumError",
    "NewerTermError",
    "NodeStatistics",
    "NodeStatus",
    "Phase",
    "ProposeResult",
    "Proposer",
    "ProposerConfig",
    "ProposerError",
    "ProposerStatistics",
    "SafekeeperConnection",
    "WalGenerator",
    "WalSource",
    "WalSourceFactory",
    "chunk_end",
    "elect",
    "next_term",
    "propose",
    "quorum_commit_lsn",
    "quorum_size",
    "start_point",
    "websocket_connector",
    "websocket_fetcher",
]
