"""``serve``: run one safekeeper node until SIGINT/SIGTERM."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
from functools import partial
from pathlib import Path

import click
import trio

from ..core import SafekeeperError
from ..node import (
    ConfigError,
    NodeConfig,
    RunningNode,
    build_recovery_engine,
    configure_logging,
    load_config,
    read_peer_token,
    serve_node,
)
from ..transport import NodeMetrics
from ._main import main

__all__ = ["serve"]

log = logging.getLogger("safekeeper_recovery.serve")


@main.command()
@click.option("--id", "node_id", help="This node's id (a u64).")
@click.option("--data-dir", help="Directory holding <tenant>/<timeline>/ of every timeline.")
@click.option("--listen-http", help="HOST:PORT of the HTTP API (port 0: pick a free port).")
@click.option("--listen-wal", help="HOST:PORT of the WAL (WebSocket) port (port 0: pick one).")
@click.option("--advertise-http", help="HOST:PORT peers use for our HTTP API [listen].")
@click.option("--advertise-wal", help="HOST:PORT peers use for our WAL port [listen].")
@click.option(
    "--peer", "peers", multiple=True, metavar="ID=URL",
    help="A cluster peer and its HTTP URL, e.g. 2=http://10.0.0.2:7676 (repeat).",
)
@click.option(
    "--recovery/--no-recovery", default=None,
    help="Run peer recovery for lagging timelines [on].",
)
@click.option("--heartbeat-timeout", help="A peer is alive while its info is younger [5s].")
@click.option("--peer-push-interval",
              help="Heartbeat to peers when nothing changed (changes go out at once) [1s].")
@click.option("--persist-interval", help="How often to persist in-memory horizons [5s].")
@click.option("--keepalive-interval", help="Donor keepalive after this much idle time [1s].")
@click.option("--http-timeout", help="HTTP request timeout [10s].")
@click.option("--connect-timeout", help="Connect timeout [10s].")
@click.option("--no-data-timeout", help="Give up on a silent WAL stream after [30s].")
@click.option("--client-timeout",
              help="Close a client that stalls this long: a silent WAL push, a WAL stream "
                   "not read, a request body not sent [30s].")
@click.option("--max-connections",
              help="Open WAL-port connections at most; more get 503 [10000].")
@click.option("--max-concurrent-recoveries", help="Per-node limit on recoveries [8].")
@click.option(
    "--wal-direct-io/--no-wal-direct-io", default=None,
    help="Write WAL with O_DIRECT, bypassing the page cache (buffered where the file "
         "system refuses it) [on].",
)
@click.option(
    "--auth-public-key", help="Ed25519 public key (PEM): turns JWT auth on for both ports."
)
@click.option("--auth-token", help="File holding the token this node sends to its peers.")
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file with the same keys (underscored); CLI > SAFEKEEPER_* env > file.",
)
@click.option("--log-format", help="auto (JSON unless a terminal), json or console [auto].")
@click.option("--log-level", help="debug, info, warning, error [info].")
@click.option(
    "--ready-file", type=click.Path(dir_okay=False, path_type=Path),
    help='Once both ports listen, write {"node_id","http","wal","pid"} JSON here (atomically).',
)
def serve(config_file: Path | None, ready_file: Path | None, **options: object) -> None:
    """Run one safekeeper node (acceptor, WAL storage, WAL port, HTTP API, peer exchange,
    recovery) until SIGINT or SIGTERM, then shut down gracefully (pending WAL is fsynced)
    and exit 0.

    Every option can also come from a SAFEKEEPER_<OPTION> environment variable (e.g.
    SAFEKEEPER_HEARTBEAT_TIMEOUT=5s) or from --config FILE.toml. Durations accept 5s,
    500ms or 1.5 (seconds).
    """
    recovery = options.pop("recovery")
    cli = {k: v for k, v in options.items() if v is not None}
    if recovery is not None:
        cli["recovery"] = recovery
    try:
        config = load_config(cli, env=os.environ, config_file=config_file)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    configure_logging(config.log_format, config.log_level)
    try:
        trio.run(_run, config, ready_file)
    except (OSError, SafekeeperError, ExceptionGroup) as e:
        # A port in use, an unreadable key or token: say so in one line, exit 1. Other
        # errors (bugs) keep their traceback.
        leaves = _leaves(e)
        if not all(isinstance(x, OSError | SafekeeperError) for x in leaves):
            raise
        message = "; ".join(str(x) for x in leaves)
        log.error("node %s failed: %s", config.node_id, message)
        click.echo(f"error: {message}", err=True)
        sys.exit(1)


def _leaves(error: BaseException) -> list[BaseException]:
    """The non-group exceptions inside ``error`` (nurseries may wrap a start-up failure)."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


async def _run(config: NodeConfig, ready_file: Path | None) -> None:
    """Serve until a signal arrives; signals are caught from before start-up."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            metrics = NodeMetrics()
            engine = build_recovery_engine(config, metrics, read_peer_token(config))
            running: RunningNode = await nursery.start(
                partial(
                    serve_node, config, extra_services=[engine.service()],
                    recovery_admin=engine, metrics=metrics,
                )
            )
            log.info(
                "node %s ready: http %s, wal %s", config.node_id, running.http_url,
                running.wal_url,
            )
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
    if ready_file is not None:
        await trio.Path(ready_file).unlink(missing_ok=True)
    log.info("node %s stopped", config.node_id)


def _write_ready_file(path: Path, config: NodeConfig, running: RunningNode) -> None:
    body = {
        "node_id": int(config.node_id),
        "http": f"http://127.0.0.1:{running.http_port}",
        "wal": f"ws://127.0.0.1:{running.wal_port}",
        "pid": os.getpid(),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body) + "\n")
    os.replace(tmp, path)  # readers see the whole file or none
