"""Network transport: WAL port (WebSocket), HTTP API, peer exchange, auth."""

from ._auth import Authenticator, generate_keypair, issue_token
from ._connections import ConnectionSlots, connection_cap
from ._donor_connector import NetworkDonorConnector, NetworkStream, parse_donor_status
from ._http_app import DEFAULT_MAX_BODY_SIZE, NodeContext, RecoveryAdmin, build_http_app
from ._http_client import HttpError, HttpUnavailable, SafekeeperClient
from ._http_server import serve_http
from ._json import (
    PeerInfoBatch,
    PeerTimelineInfo,
    decode_create_timeline,
    decode_peer_info_batch,
    encode_create_timeline,
    encode_peer_info_batch,
    parse_acceptor_state,
    parse_term_history,
    peer_timeline_info,
    term_history_json,
    timeline_status_json,
)
from ._metrics import METRICS_CONTENT_TYPE, PULL_OUTCOMES, RECOVERY_OUTCOMES, NodeMetrics
from ._paths import BadRequest, TimelinePath, parse_timeline_path
from ._peer_exchange import (
    HttpPeerExchange,
    PeerExchange,
    PeerSenderStatistics,
    apply_peer_info_batch,
    build_peer_info_batch,
    serve_peer_exchange,
)
from ._pg_server import PgServerConfig, serve_pg
from ._pg_stream import PgStreamObserver
from ._pull import PullConfig, PullService, PullState, PullStatus
from ._timeline_status import (
    DiskReport,
    PgConsumerReport,
    RecoveryReport,
    TimelineStatus,
    WalLifecycleReport,
    parse_timeline_status,
)
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
from ._wal_sender import StreamIdle, WalSenderFeedback, WalSenderInfo, WalSenders
from ._wal_server import WalServerConfig, serve_wal
from ._ws_fastpath import install as enable_wsproto_fastpath

__all__ = [
    "Authenticator",
    "BadRequest",
    "ConnectionSlots",
    "DEFAULT_MAX_BODY_SIZE",
    "DiskReport",
    "HttpError",
    "HttpPeerExchange",
    "HttpUnavailable",
    "METRICS_CONTENT_TYPE",
    "NetworkDonorConnector",
    "NetworkStream",
    "NodeContext",
    "NodeMetrics",
    "PULL_OUTCOMES",
    "PeerExchange",
    "PeerInfoBatch",
    "PeerSenderStatistics",
    "PeerTimelineInfo",
    "PgConsumerReport",
    "PgServerConfig",
    "PgStreamObserver",
    "PullConfig",
    "PullService",
    "PullState",
    "PullStatus",
    "RECOVERY_OUTCOMES",
    "RecoveryAdmin",
    "RecoveryReport",
    "SafekeeperClient",
    "StreamIdle",
    "TimelinePath",
    "TimelineStatus",
    "WalConnectError",
    "WalConnectionClosed",
    "WalLifecycleReport",
    "WalPushClosed",
    "WalPushConnection",
    "WalSenderFeedback",
    "WalSenderInfo",
    "WalSenders",
    "WalServerConfig",
    "WalStreamClosed",
    "WalStreamConnection",
    "apply_peer_info_batch",
    "build_http_app",
    "build_peer_info_batch",
    "connection_cap",
    "decode_create_timeline",
    "decode_peer_info_batch",
    "enable_wsproto_fastpath",
    "encode_create_timeline",
    "encode_peer_info_batch",
    "generate_keypair",
    "issue_token",
    "open_wal_push",
    "open_wal_stream",
    "parse_acceptor_state",
    "parse_donor_status",
    "parse_term_history",
    "parse_timeline_path",
    "parse_timeline_status",
    "peer_timeline_info",
    "serve_http",
    "serve_peer_exchange",
    "serve_pg",
    "serve_wal",
    "term_history_json",
    "timeline_status_json",
]
