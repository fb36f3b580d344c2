"""safekeeper_recovery: a trio-based PostgreSQL WAL safekeeper with peer recovery."""

from .core import (
    Lsn,
    NodeId,
    TenantId,
    TermHistory,
    TermLsn,
    TimelineId,
    find_highest_common_point,
)

__all__ = [
    "Lsn",
    "NodeId",
    "TenantId",
    "TermHistory",
    "TermLsn",
    "TimelineId",
    "__version__",
    "find_highest_common_point",
]

__version__ = "0.1.0"
