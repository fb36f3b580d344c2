"""A node's configuration and where it comes from.

Precedence, highest first: command-line options > ``SAFEKEEPER_*`` environment variables >
``--config FILE.toml`` > defaults. Every key has one name, used everywhere: the TOML key
(``heartbeat_timeout``), the environment variable in upper case with the ``SAFEKEEPER_``
prefix (``SAFEKEEPER_HEARTBEAT_TIMEOUT``) and the CLI option with dashes
(``--heartbeat-timeout``). Unknown keys and bad values raise :class:`ConfigError` naming
the key and where the value came from (an unknown key with a likely meaning names it).
``auth_token`` (``--auth-token``, ``SAFEKEEPER_AUTH_TOKEN``), the old name of
``token_file``, is still accepted.

Value forms (strings from the CLI/environment, or native TOML values):

* durations: ``5s``, ``500ms``, ``2m``, ``1h`` or a bare number of seconds (``1.5``);
* addresses: ``HOST:PORT`` (``[::1]:5454`` for IPv6); port 0 picks a free port;
* peers: ``ID=URL`` items separated by commas (CLI: repeat ``--peer``), or a TOML table
  ``[peers]`` with ``"2" = "http://10.0.0.2:7676"``;
* booleans: ``true/false/1/0/yes/no/on/off``.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from ..core import DEFAULT_MAX_DISK_PERCENT, DiskLimit, NodeId, SafekeeperError
from ..storage import open_archive

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "HostPort",
    "LogFormat",
    "NodeConfig",
    "load_config",
    "parse_disk_limit",
    "parse_duration",
    "parse_host_port",
]

ENV_PREFIX: Final = "SAFEKEEPER_"
LogFormat = Literal["auto", "json", "console"]
HostPort = tuple[str, int]
_LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
DEFAULT_MAX_DISK_USAGE: Final = DiskLimit(percent=DEFAULT_MAX_DISK_PERCENT)


class ConfigError(SafekeeperError):
    """The configuration is incomplete, names an unknown key, or holds a bad value."""


@attrs.frozen(kw_only=True)
class NodeConfig:
    """Everything one ``serve`` process needs; build it with :func:`load_config`.

    ``advertise_*`` default to the listen address (with the real bound port when port 0
    was asked for); they are what peers are told to connect to.
    """

    node_id: NodeId
    data_dir: Path
    listen_http: HostPort
    listen_wal: HostPort
    listen_pg: HostPort | None = None
    """The PostgreSQL replication port (docs/postgres-port.md); ``None``: not served."""
    advertise_http: HostPort | None = None
    advertise_wal: HostPort | None = None
    peers: Mapping[NodeId, str] = attrs.field(factory=dict)
    recovery: bool = True
    heartbeat_timeout: float = 5.0
    peer_push_interval: float = 1.0
    persist_interval: float = 5.0
    auth_public_key: Path | None = None
    token_file: Path | None = None
    """The JWT this node sends to its peers (needed when auth is on and peers are set)."""
    keepalive_interval: float = 1.0
    http_timeout: float = 10.0
    connect_timeout: float = 10.0
    no_data_timeout: float = 30.0
    client_timeout: float = 30.0
    """An accepted connection is closed when its client sends nothing this long on a WAL
    push, stops taking what a WAL stream sends for this long, or takes longer to send a
    request body."""
    max_connections: int = 10_000
    """Open WAL-port connections at most (further ones get 503); the node also keeps at
    least half its file-descriptor limit for timelines (see docs/architecture.md)."""
    max_concurrent_recoveries: int = 8
    recovery_max_rate: int = 128 * 1024 * 1024
    """Node-wide bytes per second that peer recovery may receive; 0: unlimited. Timelines
    whose quorum is at risk are exempt (docs/throttles.md)."""
    recovery_serve_max_rate: int = 128 * 1024 * 1024
    """Node-wide bytes per second of WAL this node serves to recovering peers; 0:
    unlimited. Same exemption."""
    recovery_max_senders: int = 8
    """Recovery streams this node serves at once as a donor; more are refused as busy
    (the recovering node tries another donor or backs off). Same exemption."""
    wal_direct_io: bool = True
    """Write WAL with O_DIRECT (no page-cache copy; buffered where the file system
    refuses it). See storage/_direct.py for why."""
    wal_memory: int = 64 * 1024 * 1024
    """Bytes of the newest WAL kept in memory, all timelines together, for readers at the
    live end (standbys on the pg port, the archive uploader, peers finishing a recovery):
    they read it with no disk read (storage/_recent_wal.py). 0: none. Process-wide."""
    archive: str | None = None
    """Where completed WAL segments are archived: ``file:///DIR`` or ``s3://BUCKET/PREFIX``
    (docs/archive.md). With an archive, WAL is removed once archived and committed."""
    archive_endpoint: str | None = None
    """The URL of an S3-compatible server (``s3://`` archives only; default: AWS)."""
    wal_keep_size: int | None = None
    """Bytes of WAL kept behind the flush position at least; without an archive also the
    most kept (committed WAL further behind is removed). Default: no limit, i.e. without
    an archive a node never removes WAL (it warns at start-up)."""
    wal_peer_hold: float = 600.0
    """A peer heard from within this long keeps the WAL from its flush position on (so a
    lagging or restarted peer can catch up from us); a peer silent for longer holds
    nothing."""
    pull_missing_timelines: bool = False
    """Pull every timeline a peer holds and this node lacks (a node back on an empty disk
    comes back by itself). Off by default: see docs/pull.md."""
    max_disk_usage: DiskLimit | None = DEFAULT_MAX_DISK_USAGE
    """Past this usage of the data directory's file system (bytes, or a percentage of
    its size) new WAL is refused and recovery pauses until space is freed (rules U1-U4,
    ``core/_disk_guard.py``); ``None`` (``off``): never refused."""
    log_format: LogFormat = "auto"
    log_level: str = "info"


# ---- value parsers: str (CLI/env) or native TOML value -> typed value -------------------


def parse_duration(value: object) -> float:
    """Seconds from ``5s``/``500ms``/``2m``/``1h``/``90d``/``1.5`` (or a number); > 0."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*", value)
        if m is None:
            raise ValueError(f"expected a duration like 5s, 500ms or 1.5, got {value!r}")
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
                 None: 1.0}[m.group(2)]
        seconds = float(m.group(1)) * scale
    else:
        raise ValueError(f"expected a duration, got {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


def parse_host_port(value: object) -> HostPort:
    """``HOST:PORT`` (``[v6]:PORT``) -> ``(host, port)``; port 0 means "pick one"."""
    if not isinstance(value, str):
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host, port


def _parse_node_id(value: object) -> NodeId:
    if isinstance(value, bool):
        raise ValueError(f"expected a node id, got {value!r}")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise ValueError(f"expected a non-negative integer node id, got {value!r}")
        value = int(value)
    if not isinstance(value, int):
        raise ValueError(f"expected a node id, got {value!r}")
    return NodeId(value)


def _parse_path(value: object) -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError(f"expected a path, got {value!r}")
    return Path(value)


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_positive_int(value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return value


def _parse_url(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value.strip()):
        raise ValueError(f"expected an http(s):// URL, got {value!r}")
    return value.strip().rstrip("/")


def _parse_peers(value: object) -> dict[NodeId, str]:
    items: list[tuple[object, object]]
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, str | list | tuple):
        parts = value.split(",") if isinstance(value, str) else list(value)
        items = []
        for part in parts:
            if not isinstance(part, str):
                raise ValueError(f"expected ID=URL, got {part!r}")
            if not part.strip():
                continue
            node, sep, url = part.partition("=")
            if not sep:
                raise ValueError(f"expected ID=URL, got {part!r}")
            items.append((node.strip(), url))
    else:
        raise ValueError(f"expected ID=URL items or a table, got {value!r}")
    peers: dict[NodeId, str] = {}
    for raw_id, raw_url in items:
        node_id = _parse_node_id(raw_id)
        if node_id in peers:
            raise ValueError(f"peer {node_id} is listed twice")
        peers[node_id] = _parse_url(raw_url)
    return peers


_SIZE_UNITS: Final = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
                      "tib": 1 << 40}


def _parse_size(value: object) -> int:
    """Bytes from ``64MiB``/``1GiB``/``65536`` (binary units) or a TOML integer; >= 0."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+)\s*([KMGT]iB|B)?\s*", value, flags=re.IGNORECASE)
        if m is None:
            raise ValueError(f"expected a size like 64MiB, got {value!r}")
        value = int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a size like 64MiB, got {value!r}")
    return value


def _parse_archive(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected file:///DIR or s3://BUCKET/PREFIX, got {value!r}")
    open_archive(value.strip())  # checks the form only: opens nothing
    return value.strip()


def parse_disk_limit(value: object) -> DiskLimit | None:
    """``95%``, ``12.5%``, a size (``200GiB``) or ``off``: rule U1."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("off", "none"):
            return None
        if text.endswith("%"):
            try:
                return DiskLimit(percent=float(text[:-1]))
            except ValueError:
                raise ValueError(f"expected a percentage in (0, 100], a size like 200GiB "
                                 f"or off, got {value!r}") from None
    size = _parse_size(value)
    if size == 0:
        raise ValueError("a disk limit must be positive (use off to disable the guard)")
    return DiskLimit(max_bytes=size)


def _parse_log_format(value: object) -> LogFormat:
    if value == "auto" or value == "json" or value == "console":
        return value
    raise ValueError(f"expected auto, json or console, got {value!r}")


def _parse_log_level(value: object) -> str:
    if isinstance(value, str) and value.strip().lower() in _LOG_LEVELS:
        return value.strip().lower()
    raise ValueError(f"expected one of {', '.join(_LOG_LEVELS)}, got {value!r}")


_PARSERS: Final[dict[str, Callable[[object], object]]] = {
    "node_id": _parse_node_id,
    "data_dir": _parse_path,
    "listen_http": parse_host_port,
    "listen_wal": parse_host_port,
    "listen_pg": parse_host_port,
    "advertise_http": parse_host_port,
    "advertise_wal": parse_host_port,
    "peers": _parse_peers,
    "recovery": _parse_bool,
    "heartbeat_timeout": parse_duration,
    "peer_push_interval": parse_duration,
    "persist_interval": parse_duration,
    "auth_public_key": _parse_path,
    "token_file": _parse_path,
    "keepalive_interval": parse_duration,
    "http_timeout": parse_duration,
    "connect_timeout": parse_duration,
    "no_data_timeout": parse_duration,
    "client_timeout": parse_duration,
    "max_connections": _parse_positive_int,
    "max_concurrent_recoveries": _parse_positive_int,
    "recovery_max_rate": _parse_size,
    "recovery_serve_max_rate": _parse_size,
    "recovery_max_senders": _parse_positive_int,
    "wal_direct_io": _parse_bool,
    "wal_memory": _parse_size,
    "archive": _parse_archive,
    "archive_endpoint": _parse_url,
    "wal_keep_size": _parse_size,
    "wal_peer_hold": parse_duration,
    "pull_missing_timelines": _parse_bool,
    "max_disk_usage": parse_disk_limit,
    "log_format": _parse_log_format,
    "log_level": _parse_log_level,
}
_REQUIRED: Final = ("node_id", "data_dir", "listen_http", "listen_wal")
_ALIASES: Final = {"auth_token": "token_file"}
"""Old key names still accepted (scripts and config files may have them)."""
_HINTS: Final = {"id": "node_id", "node": "node_id", "token": "token_file",
                 "public_key": "auth_public_key", "listen": "listen_http",
                 "http": "listen_http", "wal": "listen_wal", "log": "log_level"}
"""Unknown keys whose meaning is clear enough to suggest the right one."""
_ENV_CONFIG_FILE: Final = ENV_PREFIX + "CONFIG"
"""``SAFEKEEPER_CONFIG`` names the TOML file when ``--config`` is not given."""

assert set(_PARSERS) == {f.name for f in attrs.fields(NodeConfig)}, "a key has no parser"


def load_config(
    cli: Mapping[str, object],
    *,
    env: Mapping[str, str],
    config_file: Path | None = None,
) -> NodeConfig:
    """Merge the sources (CLI > env > TOML > defaults) into a checked :class:`NodeConfig`.

    ``cli`` holds only the options the user gave (``None`` values are ignored); keys are
    field names. ``env`` is usually ``os.environ``: only ``SAFEKEEPER_*`` variables are
    read, and an unknown one is an error (a typo must not silently fall back to a default).
    ``config_file`` (or ``SAFEKEEPER_CONFIG``) is a TOML file with top-level keys.
    Raises :class:`ConfigError`.
    """
    values: dict[str, object] = {}

    path = config_file
    if path is None and env.get(_ENV_CONFIG_FILE):
        path = Path(env[_ENV_CONFIG_FILE])
    if path is not None:
        for key, raw in _read_toml(path).items():
            _set(values, key.replace("-", "_"), raw, f"{path}: {key}")

    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == _ENV_CONFIG_FILE:
            continue
        _set(values, name[len(ENV_PREFIX):].lower(), raw, f"environment {name}")

    for key, raw in cli.items():
        if raw is None or (isinstance(raw, tuple | list) and not raw):
            continue
        _set(values, key, raw, f"--{key.replace('_', '-')}")

    missing = [k for k in _REQUIRED if k not in values]
    if missing:
        hints = ", ".join(f"--{k.replace('_', '-')}" for k in missing)
        raise ConfigError(f"missing required settings: {hints} (or {ENV_PREFIX}… / config file)")
    config = NodeConfig(**values)  # type: ignore[arg-type]  # values are typed by _PARSERS
    if config.listen_http == config.listen_wal and config.listen_http[1] != 0:
        host, port = config.listen_http
        raise ConfigError(f"listen_http and listen_wal are both {host}:{port}: the HTTP API "
                          "and the WAL port need two ports")
    if config.listen_pg is not None and config.listen_pg[1] != 0 and config.listen_pg in (
            config.listen_http, config.listen_wal):
        host, port = config.listen_pg
        raise ConfigError(f"listen_pg {host}:{port} is also the HTTP API's or the WAL port's "
                          "address: the PostgreSQL replication port needs a port of its own")
    if config.archive_endpoint is not None and not (config.archive or "").startswith("s3://"):
        raise ConfigError("archive_endpoint is set but archive is not an s3:// URL: the "
                          "endpoint is the S3-compatible server of an s3:// archive")
    if config.node_id in config.peers:
        raise ConfigError(f"peers lists this node's own id {config.node_id}")
    if config.auth_public_key is not None and config.token_file is None and config.peers:
        # Peers of a node with auth on check tokens too: without one, every push would fail.
        raise ConfigError(
            "auth_public_key is set but token_file is not: a node with peers needs "
            "--token-file (a safekeeperdata token, sent to its peers)")
    return config


def _set(values: dict[str, object], key: str, raw: object, source: str) -> None:
    key = _ALIASES.get(key, key)
    parser = _PARSERS.get(key)
    if parser is None:
        hint = _HINTS.get(key) or next(iter(difflib.get_close_matches(key, _PARSERS, n=1)), None)
        did_you_mean = f"; did you mean {hint!r}?" if hint else ""
        raise ConfigError(f"unknown setting {key!r} ({source}){did_you_mean}")
    try:
        values[key] = parser(raw)
    except (ValueError, OverflowError) as e:
        raise ConfigError(f"bad value for {key} ({source}): {e}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
