"""The node process: configuration, logging and the wiring of every service (``serve_node``)."""

from ._config import (
    ENV_PREFIX,
    ConfigError,
    HostPort,
    LogFormat,
    NodeConfig,
    load_config,
    parse_disk_limit,
    parse_duration,
    parse_host_port,
)
from ._data_dir_lock import LOCK_FILE_NAME, DataDirLock, DataDirLocked
from ._disk import build_disk_guard
from ._fd_limit import raise_fd_limit
from ._lifecycle import check_archive, lifecycle_config, lifecycle_service
from ._logging import configure_logging
from ._node import SHUTDOWN_FLUSH_TIMEOUT, RunningNode, read_peer_token, serve_node
from ._recovery import (
    build_recovery_engine,
    build_throttles,
    close_recovery_engine,
    recovery_service,
)

__all__ = [
    "ConfigError",
    "DataDirLock",
    "DataDirLocked",
    "ENV_PREFIX",
    "HostPort",
    "LOCK_FILE_NAME",
    "LogFormat",
    "NodeConfig",
    "RunningNode",
    "SHUTDOWN_FLUSH_TIMEOUT",
    "build_disk_guard",
    "build_recovery_engine",
    "build_throttles",
    "check_archive",
    "close_recovery_engine",
    "configure_logging",
    "lifecycle_config",
    "lifecycle_service",
    "load_config",
    "parse_disk_limit",
    "parse_duration",
    "parse_host_port",
    "raise_fd_limit",
    "read_peer_token",
    "recovery_service",
    "serve_node",
]
