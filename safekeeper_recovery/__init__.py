"""safekeeper_recovery: a trio-based PostgreSQL WAL safekeeper with peer recovery."""

from ._allocator import tune_allocator
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
    "tune_allocator",
]

__version__ = "0.1.0"
