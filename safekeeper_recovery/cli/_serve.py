"""``serve``: run one safekeeper node until SIGINT/SIGTERM."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs
import click
import trio
from click.core import ParameterSource
from click.types import OptionHelpExtra

from ..core import SafekeeperError, TenantTimelineId, leaves
from ..node import (
    ENV_PREFIX,
    ConfigError,
    NodeConfig,
    RunningNode,
    build_disk_guard,
    build_recovery_engine,
    build_throttles,
    check_archive,
    close_recovery_engine,
    configure_logging,
    lifecycle_config,
    lifecycle_service,
    load_config,
    raise_fd_limit,
    read_peer_token,
    recovery_service,
    serve_node,
)
from ..recovery import RecoveryStatus
from ..timeline import LifecycleReport
from ..transport import NodeMetrics
from ._main import main
from ._options import (
    ARCHIVE_URL,
    DISK_LIMIT,
    DURATION,
    HTTP_URL,
    NODE_ID,
    SIZE,
    apply_aliases,
    deprecated_alias,
    format_duration,
)

__all__ = ["serve"]

log = logging.getLogger("safekeeper_recovery.serve")
F = TypeVar("F", bound=Callable[..., Any])


class SettingOption(click.Option):
    """An option of ``serve`` that is also a config key and a ``SAFEKEEPER_*`` variable.

    Its help shows the variable, its default (from :class:`NodeConfig`) and, for the
    settings every node needs, ``[required]`` (not enforced by click: the value may come
    from the environment or the config file; :func:`load_config` checks).
    """

    def __init__(self, *args: Any, setting_required: bool = False,
                 default_text: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setting_required = setting_required
        self.default_text = default_text

    def get_help_extra(self, ctx: click.Context) -> OptionHelpExtra:
        extra = super().get_help_extra(ctx)
        assert self.name is not None, "every setting has a name"
        extra["envvars"] = (ENV_PREFIX + self.name.upper(),)
        if self.setting_required:
            extra["required"] = "required"
        if self.default_text is not None:
            extra["default"] = self.default_text
        return extra


def _default(name: str) -> object:
    """The setting's default from NodeConfig, in the syntax its option takes."""
    field = attrs.fields_dict(NodeConfig)[name]
    value = field.default
    if value is attrs.NOTHING or isinstance(value, attrs.Factory):  # type: ignore[arg-type]  # attrs' sentinel types
        return None
    if isinstance(value, float):
        return format_duration(value)
    return value


def setting(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    """A :class:`SettingOption` whose default (shown, never applied by click) is
    NodeConfig's."""
    name = decls[-1] if not decls[-1].startswith("-") else decls[0].split("/")[0][2:].replace(
        "-", "_")
    default = _default(name)
    if default is not None and not kwargs.get("multiple"):
        kwargs.setdefault("default", default)
        kwargs.setdefault("show_default", True)
    return click.option(*decls, cls=SettingOption, **kwargs)


_HOST_PORT_META = "HOST:PORT"  # checked by load_config, which names the setting


@main.command()
@setting("--node-id", type=NODE_ID, setting_required=True, help="This node's id.")
@deprecated_alias("--id", "--node-id", "node_id", type=NODE_ID)
@setting("--data-dir", type=click.Path(path_type=Path), metavar="DIRECTORY",
         setting_required=True,
         help="Directory holding <tenant>/<timeline>/ of every timeline (created if missing).")
@setting("--listen-http", metavar=_HOST_PORT_META, setting_required=True,
         help="Address of the HTTP API (port 0: pick a free port).")
@setting("--listen-wal", metavar=_HOST_PORT_META, setting_required=True,
         help="Address of the WAL (WebSocket) port (port 0: pick a free port).")
@setting("--listen-pg", metavar=_HOST_PORT_META,
         help="Address of the PostgreSQL replication port, for standbys and pg_receivewal "
              "(port 0: pick a free port). Default: not served. See docs/postgres-port.md.")
@setting("--advertise-http", metavar=_HOST_PORT_META,
         default_text="--listen-http", help="Address peers use for our HTTP API.")
@setting("--advertise-wal", metavar=_HOST_PORT_META,
         default_text="--listen-wal", help="Address peers use for our WAL port.")
@setting("--peer", "peers", multiple=True, metavar="ID=URL",
         help="A cluster peer and its HTTP API, e.g. 2=http://10.0.0.2:7676 (repeat the "
              "option; in the environment and config: a comma-separated list / a table).")
@setting("--recovery/--no-recovery", "recovery",
         help="Run peer recovery for lagging timelines (off: run `sidecar` next to the node).")
@setting("--heartbeat-timeout", type=DURATION,
         help="A peer is alive while its last info is younger than this.")
@setting("--peer-push-interval", type=DURATION,
         help="Heartbeat to peers after this long without changes (changes go out at once).")
@setting("--persist-interval", type=DURATION, help="How often to persist in-memory horizons.")
@setting("--keepalive-interval", type=DURATION,
         help="Send a keepalive to a recovering peer after this much idle time.")
@setting("--http-timeout", type=DURATION, help="Timeout of one HTTP request to a peer.")
@setting("--connect-timeout", type=DURATION, help="Timeout of one connect to a peer.")
@setting("--no-data-timeout", type=DURATION,
         help="Give up on a WAL stream that sent nothing for this long.")
@setting("--client-timeout", type=DURATION,
         help="Close a client that stalls this long: a silent WAL push, a WAL stream not "
              "read, a request body not sent.")
@setting("--max-connections", type=click.IntRange(min=1),
         help="Open WAL-port connections at most; more get 503.")
@setting("--max-concurrent-recoveries", type=click.IntRange(min=1),
         help="How many timelines of this node may recover at once (the others wait: "
              "quorum at risk first, then the smallest lag).")
@setting("--recovery-max-rate", type=SIZE, default_text="128MiB",
         help="Bytes per second peer recovery may receive, node-wide (0: unlimited); "
              "timelines whose quorum is at risk are exempt. Changeable at run time: "
              "PATCH /v1/recovery/throttles.")
@setting("--recovery-serve-max-rate", type=SIZE, default_text="128MiB",
         help="Bytes per second of WAL served to recovering peers, node-wide (0: "
              "unlimited); same exemption.")
@setting("--recovery-max-senders", type=click.IntRange(min=1),
         help="Recovery streams served at once as a donor; more are answered busy.")
@setting(
    "--wal-direct-io/--no-wal-direct-io", "wal_direct_io",
    help="Write WAL with O_DIRECT, bypassing the page cache (buffered where the file "
         "system refuses it).",
)
@setting("--wal-memory", type=SIZE, default_text="64MiB",
         help="The newest WAL kept in memory, all timelines together, so that readers at the "
              "live end (standbys, the archive uploader, peers finishing a recovery) need no "
              "disk read (0: none).")
@setting("--archive", type=ARCHIVE_URL,
         help="Archive completed WAL segments here (file:///DIR or s3://BUCKET/PREFIX; S3 "
              "credentials and region from AWS_* variables) and remove WAL once archived "
              "and committed. See docs/archive.md.")
@setting("--archive-endpoint", type=HTTP_URL,
         help="URL of the S3-compatible server of an s3:// archive (default: AWS).")
@setting("--wal-keep-size", type=SIZE,
         help="Keep at least this much WAL behind the flush position; without --archive, "
              "remove committed WAL further behind. Unset and without --archive: WAL is "
              "never removed.")
@setting("--wal-peer-hold", type=DURATION,
         help="A peer heard from within this long keeps the WAL from its flush position on, "
              "so that it catches up from this node's disk (a peer away longer is served "
              "from the archive).")
@setting("--pull-missing-timelines/--no-pull-missing-timelines", "pull_missing_timelines",
         help="Pull every timeline a peer holds and this node lacks, a few at a time, with "
              "back-off (a node back on an empty disk rejoins by itself). See docs/pull.md "
              "for why it is off by default.")
@setting("--max-disk-usage", type=DISK_LIMIT,
         help="Past this usage of the data directory's file system (a size, or a "
              "percentage of it) new WAL is refused (proposers get close code 4012) and "
              "recovery pauses, until space is freed; off: never. See docs/archive.md.")
@setting("--auth-public-key", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
         help="Ed25519 public key (PEM, from `keygen`): turns JWT auth on for both ports.")
@setting("--token-file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
         help="File holding the JWT (safekeeperdata scope) this node sends to its peers; "
              "needed with --auth-public-key and --peer.")
@deprecated_alias("--auth-token", "--token-file", "token_file",
                  type=click.Path(dir_okay=False, path_type=Path))
@setting("--log-format", type=click.Choice(["auto", "json", "console"]),
         help="auto: JSON unless stderr is a terminal.")
@setting("--log-level", type=click.Choice(["debug", "info", "warning", "error", "critical"],
                                          case_sensitive=False),
         help="The lowest level logged.")
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
    envvar=f"{ENV_PREFIX}CONFIG", show_envvar=True,
    help=f"TOML file with the same settings (keys underscored: node_id = 1). Precedence: "
         f"options > {ENV_PREFIX}* environment > this file > defaults.",
)
@click.option(
    "--ready-file", type=click.Path(dir_okay=False, path_type=Path),
    help='Once both ports listen, write {"node_id","http","wal","pid"} JSON here (atomically).',
)
def serve(config_file: Path | None, ready_file: Path | None, **options: object) -> None:
    """Run one safekeeper node (acceptor, WAL storage, WAL port, HTTP API, peer exchange,
    recovery) until SIGINT or SIGTERM, then shut down gracefully (pending WAL is fsynced)
    and exit 0.

    Every option but --config and --ready-file is a setting that can also come from the
    environment variable shown in its help or from --config FILE.toml (the key is the
    option's name with underscores). Durations accept 5s, 500ms, 2m or 1.5 (seconds).
    """
    ctx = click.get_current_context()
    given = apply_aliases(ctx, options)
    # Only what was typed goes to load_config: a click default must not override the
    # environment or the config file.
    cli = {
        name: value for name, value in options.items()
        if name in given or ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    }
    try:
        config = load_config(cli, env=os.environ, config_file=config_file)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    configure_logging(config.log_format, config.log_level)
    raise_fd_limit()  # before any connection or timeline file is opened
    try:
        trio.run(_run, config, ready_file)
    except (OSError, SafekeeperError, ExceptionGroup) as e:
        # A port in use, an unreadable key or token: say so in one line, exit 1. Other
        # errors (bugs) keep their traceback.
        inside = leaves(e)
        if not all(isinstance(x, OSError | SafekeeperError) for x in inside):
            raise
        message = "; ".join(str(x) for x in inside)
        log.error("node %s failed: %s", config.node_id, message)
        click.echo(f"Error: {message}", err=True)
        sys.exit(1)


async def _run(config: NodeConfig, ready_file: Path | None) -> None:
    """Serve until a signal arrives; signals are caught from before start-up."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            metrics = NodeMetrics()
            guard = build_disk_guard(config, metrics)
            throttles = build_throttles(config)
            engine = build_recovery_engine(config, metrics, read_peer_token(config),
                                           throttles=throttles)
            settings = lifecycle_config(config)
            lifecycle_shown: dict[TenantTimelineId, LifecycleReport] = {}
            lifecycle = lifecycle_service(config, settings, metrics, lifecycle_shown, guard)
            shown: dict[TenantTimelineId, RecoveryStatus] = {}
            running: RunningNode = await nursery.start(
                partial(
                    serve_node, config,
                    extra_services=[recovery_service(engine, shown, guard), lifecycle],
                    recovery_admin=engine, recovery_statuses=shown,
                    lifecycle_statuses=lifecycle_shown, metrics=metrics, disk_guard=guard,
                    archive=settings.archive,
                    throttles=throttles,
                )
            )
            log.info(
                "node %s ready: http %s, wal %s", config.node_id, running.http_url,
                running.wal_url,
            )
            nursery.start_soon(check_archive, settings)
            if ready_file is not None:
                await trio.to_thread.run_sync(_write_ready_file, ready_file, config, running)
            # What is loaded now (thousands of timelines) lives as long as the process:
            # keep the cyclic GC from re-scanning all of it in every full collection.
            gc.collect()
            gc.freeze()
            async for signum in signals:
                log.info("received %s: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
        await close_recovery_engine(engine)  # every supervisor has ended
    if ready_file is not None:
        await trio.Path(ready_file).unlink(missing_ok=True)
    log.info("node %s stopped", config.node_id)


def _reachable_host(host: str) -> str:
    """Where a client on this machine reaches a listener on ``host`` (a wildcard listens on
    loopback too; an IPv6 address goes in brackets in a URL)."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _write_ready_file(path: Path, config: NodeConfig, running: RunningNode) -> None:
    """The ready file: the node's id, pid and the URLs its listeners answer on (the
    configured host, which the fault campaign sets to a namespace's address)."""
    http_host = _reachable_host(config.listen_http[0])
    wal_host = _reachable_host(config.listen_wal[0])
    body = {
        "node_id": int(config.node_id),
        "http": f"http://{http_host}:{running.http_port}",
        "wal": f"ws://{wal_host}:{running.wal_port}",
        **({"pg": f"{_reachable_host(config.listen_pg[0])}:{running.pg_port}"}
           if config.listen_pg is not None and running.pg_port is not None else {}),
        "pid": os.getpid(),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body) + "\n")
    os.replace(tmp, path)  # readers see the whole file or none
