"""The node's WAL lifecycle service (archive upload and removal), from its configuration."""

from __future__ import annotations

import logging

from ..core import ArchiveError
from ..storage import open_archive
from ..timeline import LifecycleConfig, TimelineService, wal_lifecycle_service
from ..transport import NodeMetrics
from ._config import NodeConfig

__all__ = ["lifecycle_config", "lifecycle_service"]

log = logging.getLogger(__name__)


def lifecycle_config(config: NodeConfig) -> LifecycleConfig:
    """The lifecycle settings of ``config`` (the archive is built, nothing is opened)."""
    archive = (open_archive(config.archive, endpoint=config.archive_endpoint)
               if config.archive is not None else None)
    return LifecycleConfig(
        archive=archive, keep_bytes=config.wal_keep_size,
        heartbeat_timeout=config.heartbeat_timeout,
    )


async def lifecycle_service(config: NodeConfig, metrics: NodeMetrics) -> TimelineService:
    """One lifecycle per timeline of the node.

    Checks the archive once (a missing directory or bucket, refused credentials) and logs
    a warning if it does not answer: the node serves anyway (uploads retry, and nothing
    unarchived is removed meanwhile). Warns when WAL can grow without bound (no archive,
    no ``wal_keep_size``).
    """
    settings = lifecycle_config(config)
    if settings.archive is not None:
        try:
            await settings.archive.check()
        except ArchiveError as e:
            log.warning("archive %s does not work yet: %s; WAL is kept until uploads succeed",
                        settings.archive.url, e)
        else:
            log.info("archiving WAL to %s", settings.archive.url)
    elif settings.keep_bytes is None:
        log.warning("no --archive and no --wal-keep-size: this node never removes WAL, so "
                    "its disk use grows without bound; set --archive URL (or "
                    "--wal-keep-size SIZE to keep only the newest WAL)")
    return wal_lifecycle_service(config.node_id, settings, metrics)
