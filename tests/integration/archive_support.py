"""Reading a node's WAL lifecycle state in the real-process archive tests."""

from __future__ import annotations

from collections.abc import Mapping

from safekeeper_recovery.core import TenantTimelineId
from safekeeper_recovery.testing import Cluster

__all__ = ["lifecycle_of"]


async def lifecycle_of(cluster: Cluster, node_id: int,
                       ttid: TenantTimelineId) -> Mapping[str, object]:
    """The ``wal_lifecycle`` object of the node's timeline status (the node runs one)."""
    value = (await cluster.timeline_status(node_id, ttid)).wal_lifecycle
    assert value is not None, f"node {node_id} reports no WAL lifecycle"
    return value
