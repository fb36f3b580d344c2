"""Network transport: WAL port (WebSocket), HTTP API, peer exchange, auth."""

from ._paths import BadRequest, TimelinePath, parse_timeline_path
from ._wal_acceptor import run_wal_acceptor
from ._wal_client import (
    WalConnectError,
    WalConnectionClosed,
    WalPushClosed,
    WalPushConnection,
    WalStreamClosed,
    WalStreamConnection,
    open_wal_push,
    open_wal_stream,
)
from ._wal_sender import WalSenderError, run_wal_sender
from ._wal_server import WalServerConfig, serve_wal

__all__ = [
    "BadRequest",
    "TimelinePath",
    "WalConnectError",
    "WalConnectionClosed",
    "WalPushClosed",
    "WalPushConnection",
    "WalSenderError",
    "WalServerConfig",
    "WalStreamClosed",
    "WalStreamConnection",
    "open_wal_push",
    "open_wal_stream",
    "parse_timeline_path",
    "run_wal_acceptor",
    "run_wal_sender",
    "serve_wal",
]
