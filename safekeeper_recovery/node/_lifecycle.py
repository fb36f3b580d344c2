"""The node's WAL lifecycle service (archive upload and removal), from its configuration."""

from __future__ import annotations

import logging

from ..core import ArchiveError, TenantTimelineId
from ..storage import open_archive
from ..timeline import (
    DiskGuard,
    LifecycleConfig,
    LifecycleObserver,
    LifecycleReport,
    TimelineService,
    wal_lifecycle_service,
)
from ._config import NodeConfig

__all__ = ["check_archive", "lifecycle_config", "lifecycle_service"]

log = logging.getLogger(__name__)


def lifecycle_config(config: NodeConfig) -> LifecycleConfig:
    """The lifecycle settings of ``config`` (the archive is built, nothing is opened)."""
    archive = (open_archive(config.archive, endpoint=config.archive_endpoint)
               if config.archive is not None else None)
    return LifecycleConfig(
        archive=archive, keep_bytes=config.wal_keep_size,
        heartbeat_timeout=config.heartbeat_timeout, peer_hold=config.wal_peer_hold,
        start_delay=config.heartbeat_timeout,
    )


def lifecycle_service(config: NodeConfig, settings: LifecycleConfig,
                      observer: LifecycleObserver,
                      shown: dict[TenantTimelineId, LifecycleReport],
                      guard: DiskGuard | None = None) -> TimelineService:
    """One lifecycle per timeline of the node, its status registered in ``shown`` (what
    ``serve_node(lifecycle_statuses=...)`` shows); see :func:`check_archive` for what is
    said about it at start-up."""
    return wal_lifecycle_service(config.node_id, settings, observer, shown, guard)


async def check_archive(settings: LifecycleConfig) -> None:
    """Say at start-up what becomes of WAL: a warning when it can grow without bound (no
    archive, no ``wal_keep_size``); else check the archive once (the directory or bucket
    exists, the credentials are accepted) and log the answer, a warning if it does not
    work. Never raises: the node serves anyway (uploads retry, and nothing unarchived is
    removed meanwhile). Run it beside the running node, not before it: an unreachable S3
    endpoint takes its timeouts."""
    if not settings.enabled:
        log.warning("no --archive and no --wal-keep-size: this node never removes WAL, so "
                    "its disk use grows without bound; set --archive URL (or "
                    "--wal-keep-size SIZE to keep only the newest WAL)")
    if settings.archive is None:
        return
    try:
        await settings.archive.check()
    except ArchiveError as e:
        log.warning("archive %s does not work yet: %s; WAL is kept until uploads succeed",
                    settings.archive.url, e)
    else:
        log.info("archiving WAL to %s", settings.archive.url)
