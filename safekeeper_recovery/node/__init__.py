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

__all__ = [
    "ConfigError",
    "HostPort",
    "LogFormat",
    "NodeConfig",
    "configure_logging",
    "load_config",
    "parse_duration",
    "parse_host_port",
]
