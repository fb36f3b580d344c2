"""The node's disk guard, from its configuration (rules U1-U4, ``core/_disk_guard.py``)."""

from __future__ import annotations

from ..timeline import DiskGuard, DiskGuardObserver
from ._config import NodeConfig

__all__ = ["build_disk_guard"]


def build_disk_guard(config: NodeConfig, observer: DiskGuardObserver | None = None) -> DiskGuard:
    """The guard of ``config.data_dir`` with ``config.max_disk_usage`` (``None``: it only
    measures). Nothing is measured until :meth:`DiskGuard.serve` runs (``serve_node``
    starts it once the data directory exists)."""
    return DiskGuard(config.data_dir, config.max_disk_usage, observer=observer)
