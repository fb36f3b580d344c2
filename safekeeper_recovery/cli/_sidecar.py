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
@click.option("--poll-interval", type=float, default=0.5, show_default=True,
              help="Seconds between looks at the node's state (a sidecar cannot be woken).")
@click.option("--http-timeout", type=float, default=10.0, show_default=True)
@click.option("--connect-timeout", type=float, default=10.0, show_default=True)
@click.option("--no-data-timeout", type=float, default=30.0, show_default=True)
@click.option("--heartbeat-timeout", type=float, default=5.0, show_default=True)
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default="auto")
def sidecar(
    node_url: str,
    token_file: Path | None,
    poll_interval: float,
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
    trio.run(_run, node_url, token, config, poll_interval)


async def _run(node_url: str, token: str | None, config: RecoveryConfig,
               poll_interval: float) -> None:
    """Run until SIGINT or SIGTERM, then cancel the engine and exit 0. (Catching
    KeyboardInterrupt does not work: trio delivers it wrapped in an exception group.)"""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: serve_sidecar(node_url, token=token, config=config,
                                                     poll_interval=poll_interval))
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
