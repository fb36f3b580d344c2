"""Peer recovery: a lagging safekeeper catches up from the most advanced eligible peer.

Public API for embedding: :class:`RecoveryEngine` (``supervise(target)`` per timeline),
the :class:`RecoveryTarget` / :class:`AcceptorSession` Protocols your timeline implements,
:class:`DonorConnector` (how donors are reached; :class:`NetworkDonorConnector` in
production), :class:`RecoveryConfig`, and the outcome types.
"""

from ._attempt import AttemptCancelled, AttemptResult, DonorTimeout, RecoveryConfig, run_attempt
from ._donor import (
    DonorConnector,
    DonorStatus,
    DonorStream,
    NetworkDonorConnector,
    parse_donor_status,
)
from ._engine import RecoveryEngine, RecoveryMetrics
from ._inprocess import InProcessDonorConnector
from ._remote import RemoteTarget, local_view_from_status
from ._sidecar import serve_sidecar
from ._status import RecoveryState, RecoveryStatus
from ._target import AcceptorSession, LocalTarget, LocalView, RecoveryTarget

__all__ = [
    "AcceptorSession",
    "AttemptCancelled",
    "AttemptResult",
    "DonorConnector",
    "DonorStatus",
    "DonorStream",
    "DonorTimeout",
    "InProcessDonorConnector",
    "LocalTarget",
    "LocalView",
    "NetworkDonorConnector",
    "RecoveryConfig",
    "RecoveryEngine",
    "RecoveryMetrics",
    "RecoveryState",
    "RecoveryStatus",
    "RecoveryTarget",
    "RemoteTarget",
    "local_view_from_status",
    "parse_donor_status",
    "run_attempt",
    "serve_sidecar",
]
