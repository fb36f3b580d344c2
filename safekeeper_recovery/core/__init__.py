"""The pure consensus core: no trio, no clock, no disk (a test enforces this)."""

from ._acceptor import (
    Acceptor,
    Effect,
    FlushEffect,
    PeerUpdate,
    PersistEffect,
    Step,
    TruncateEffect,
    WriteEffect,
)
from ._codec import (
    crc32c,
    decode_acceptor_message,
    decode_proposer_message,
    decode_stream_reader_message,
    decode_stream_sender_message,
    encode,
)
from ._errors import (
    AcceptorError,
    AuthError,
    CommonPointError,
    CorruptionError,
    DonorUnavailable,
    FatalTimelineError,
    LocalProtocolError,
    NoCommonPoint,
    ProposerArrived,
    RecoveryError,
    RemoteProtocolError,
    SafekeeperError,
    StorageError,
    TermChanged,
)
from ._history import Term, TermHistory, TermLsn, find_highest_common_point
from ._ids import NodeId, TenantId, TenantTimelineId, TimelineId
from ._lsn import INVALID_LSN, MAX_LSN, XLOG_BLCKSZ, Lsn, segment_file_name
from ._messages import (
    MAX_SEND_SIZE,
    AcceptorGreeting,
    AcceptorMessage,
    AppendRequest,
    AppendResponse,
    FlushWal,
    Greeting,
    Keepalive,
    ProposerElected,
    ProposerMessage,
    StatusUpdate,
    StreamReaderMessage,
    StreamSenderMessage,
    VoteRequest,
    VoteResponse,
    WalData,
)
from ._donors import DonorSelection, PeerInfo, select_donors
from ._state import PersistentState, ServerInfo, decode_state, encode_state
