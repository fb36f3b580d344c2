"""``sidecar``: run peer recovery for every timeline of a node that runs ``--no-recovery``."""

from __future__ import annotations

import signal
from pathlib import Path

import click
import trio

from ..node import configure_logging
from ..recovery import RecoveryConfig, serve_sidecar
from ._main import main

__all__ = ["sidecar"]


@main.command()
@click.option("--node", "node_url", required=True, metavar="URL",
              help="The node's HTTP API, e.g. http://127.0.0.1:7676.")
@click.option("--token", "token_file", type=click.Path(path_type=Path, dir_okay=False),
              help="File holding the JWT sent to the node and to donors (auth on).")
@click.option("--min-interval", type=click.FloatRange(0.0, 60.0), default=0.1,
              show_default=True,
              help="At most one batch of wake-ups per this many seconds (the node's change "
                   "feed is long-polled: an idle node costs next to nothing).")
@click.option("--long-poll", type=click.FloatRange(1.0, 300.0), default=30.0,
              show_default=True, help="Seconds one long poll of the change feed may wait.")
@click.option("--poll-interval", "legacy_poll_interval", type=float, default=None,
              hidden=True, help="Deprecated: the sidecar no longer polls; same as "
                                "--min-interval.")
@click.option("--http-timeout", type=float, default=10.0, show_default=True)
@click.option("--connect-timeout", type=float, default=10.0, show_default=True)
@click.option("--no-data-timeout", type=float, default=30.0, show_default=True)
@click.option("--heartbeat-timeout", type=float, default=5.0, show_default=True)
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default="auto")
def sidecar(
    node_url: str,
    token_file: Path | None,
    min_interval: float,
    long_poll: float,
    legacy_poll_interval: float | None,
    http_timeout: float,
    connect_timeout: float,
    no_data_timeout: float,
    heartbeat_timeout: float,
    log_format: str,
) -> None:
    """Run the recovery engine against a node's public endpoints (node started with
    --no-recovery). Runs until interrupted."""
    configure_logging(log_format)  # type: ignore[arg-type]
    token = token_file.read_text().strip() if token_file is not None else None
    config = RecoveryConfig(
        http_timeout=http_timeout,
        connect_timeout=connect_timeout,
        no_data_timeout=no_data_timeout,
        heartbeat_timeout=heartbeat_timeout,
    )
    if legacy_poll_interval is not None:
        click.echo("--poll-interval is deprecated (the sidecar long-polls the node's change "
                   "feed): use --min-interval", err=True)
        min_interval = legacy_poll_interval
    trio.run(_run, node_url, token, config, min_interval, long_poll)


async def _run(node_url: str, token: str | None, config: RecoveryConfig,
               min_interval: float, long_poll: float) -> None:
    """Run until SIGINT or SIGTERM, then cancel the engine and exit 0. (Catching
    KeyboardInterrupt does not work: trio delivers it wrapped in an exception group.)"""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: serve_sidecar(node_url, token=token, config=config,
                                                     min_interval=min_interval,
                                                     long_poll=long_poll))
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
