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
from ._engine import RecoveryEngine, RecoveryMetrics
from ._status import RecoveryState, RecoveryStatus, iso_time
from ._target import AcceptorSession, LocalView, RecoveryTarget, select_for

__all__ = [
    "AcceptorSession",
    "AttemptCancelled",
    "AttemptResult",
    "DonorConnector",
    "DonorStatus",
    "DonorStream",
    "DonorTimeout",
    "LocalView",
    "RecoveryConfig",
    "RecoveryEngine",
    "RecoveryMetrics",
    "RecoveryState",
    "RecoveryStatus",
    "RecoveryTarget",
    "iso_time",
    "run_attempt",
    "select_for",
]
