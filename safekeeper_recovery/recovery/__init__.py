"""Peer recovery: a lagging safekeeper catches up from the most advanced eligible peer.

Public API for embedding: :class:`RecoveryEngine` (``supervise(target)`` per timeline),
the :class:`RecoveryTarget` / :class:`AcceptorSession` Protocols your timeline implements,
:class:`DonorConnector` (how donors are reached), :class:`RecoveryConfig`, and the outcome
types. Nothing here is network-specific and nothing imports a timeline: the implementations
live with what they adapt — ``timeline.LocalTarget`` and ``timeline.InProcessDonorConnector``
(a timeline of this process), ``transport.NetworkDonorConnector`` (donors over the network),
``sidecar.RemoteTarget`` (a node reached over its endpoints).
"""

from ._attempt import AttemptCancelled, AttemptResult, DonorTimeout, RecoveryConfig, run_attempt
from ._donor import DonorConnector, DonorStatus, DonorStream
from ._engine import PauseGate, RecoveryEngine, RecoveryMetrics
from ._scheduler import RecoveryScheduler
from ._status import RATE_WINDOW, RecoveryState, RecoveryStatus, iso_time
from ._target import AcceptorSession, LocalView, RecoveryTarget, select_for
from ._throttle import (
    DEFAULT_MAX_SENDERS,
    DEFAULT_RECOVERY_MAX_RATE,
    DEFAULT_SERVE_MAX_RATE,
    RateLimit,
    RecoveryThrottles,
)

__all__ = [
    "AcceptorSession",
    "AttemptCancelled",
    "AttemptResult",
    "DEFAULT_MAX_SENDERS",
    "DEFAULT_RECOVERY_MAX_RATE",
    "DEFAULT_SERVE_MAX_RATE",
    "DonorConnector",
    "DonorStatus",
    "DonorStream",
    "DonorTimeout",
    "LocalView",
    "PauseGate",
    "RATE_WINDOW",
    "RateLimit",
    "RecoveryConfig",
    "RecoveryEngine",
    "RecoveryMetrics",
    "RecoveryScheduler",
    "RecoveryState",
    "RecoveryStatus",
    "RecoveryTarget",
    "RecoveryThrottles",
    "iso_time",
    "run_attempt",
    "select_for",
]
