"""The node process: configuration, logging and the wiring of every service (``serve_node``)."""

from ._config import (
    ConfigError,
    HostPort,
    LogFormat,
    NodeConfig,
    load_config,
    parse_duration,
    parse_host_port,
)
from ._logging import configure_logging
from ._node import SHUTDOWN_FLUSH_TIMEOUT, RunningNode, serve_node

__all__ = [
    "ConfigError",
    "HostPort",
    "LogFormat",
    "NodeConfig",
    "RunningNode",
    "SHUTDOWN_FLUSH_TIMEOUT",
    "configure_logging",
    "load_config",
    "parse_duration",
    "parse_host_port",
    "serve_node",
]
