"""Sidecar mode: the recovery engine run next to a node started with ``--no-recovery``,
against the node's public endpoints (its HTTP status, its change feed and
``wal_push?recovery=true``)."""

from ._remote import RemoteTarget, local_view_from_status
from ._service import serve_sidecar

__all__ = ["RemoteTarget", "local_view_from_status", "serve_sidecar"]
