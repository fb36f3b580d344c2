"""``sidecar``: run peer recovery for every timeline of a node that runs ``--no-recovery``."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import click
import trio

from ..core import SafekeeperError
from ..node import LogFormat, configure_logging
from ..recovery import RecoveryConfig
from ..sidecar import serve_sidecar
from ._main import main
from ._options import (
    DURATION,
    DurationType,
    apply_aliases,
    deprecated_alias,
    node_option,
    token_file_option,
)

__all__ = ["sidecar"]


@main.command()
@node_option("The node's HTTP API (the node runs with --no-recovery).")
@token_file_option("File holding the JWT (safekeeperdata scope) sent to the node and to "
                   "donors (nodes with auth on).")
@deprecated_alias("--token", "--token-file", "token_file",
                  type=click.Path(path_type=Path, dir_okay=False))
@click.option("--min-interval", type=DurationType(allow_zero=True, max_seconds=60.0),
              default="100ms", show_default=True,
              help="At most one batch of wake-ups per this long (the node's change feed is "
                   "long-polled: an idle node costs next to nothing).")
@click.option("--long-poll", type=DurationType(max_seconds=300.0), default="30s",
              show_default=True, help="How long one long poll of the change feed may wait.")
@deprecated_alias("--poll-interval", "--min-interval", "min_interval",
                  type=DurationType(allow_zero=True, max_seconds=60.0))
@click.option("--http-timeout", type=DURATION, default="10s", show_default=True,
              help="Timeout of one HTTP request to the node or a donor.")
@click.option("--connect-timeout", type=DURATION, default="10s", show_default=True,
              help="Timeout of one connect to a donor's WAL port.")
@click.option("--no-data-timeout", type=DURATION, default="30s", show_default=True,
              help="Give up on a donor's WAL stream that sent nothing for this long.")
@click.option("--heartbeat-timeout", type=DURATION, default="5s", show_default=True,
              help="A peer is a donor candidate while the node's info on it is younger "
                   "than this.")
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default="auto",
              show_default=True, help="auto: JSON unless stderr is a terminal.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error",
                                                "critical"], case_sensitive=False),
              default="info", show_default=True, help="The lowest level logged.")
def sidecar(
    node: str,
    token_file: Path | None,
    min_interval: float,
    long_poll: float,
    http_timeout: float,
    connect_timeout: float,
    no_data_timeout: float,
    heartbeat_timeout: float,
    log_format: LogFormat,
    log_level: str,
) -> None:
    """Run the recovery engine against a node's public endpoints (node started with
    --no-recovery). Runs until interrupted."""
    params: dict[str, Any] = {"token_file": token_file, "min_interval": min_interval}
    apply_aliases(click.get_current_context(), params)
    token_file, min_interval = params["token_file"], params["min_interval"]
    configure_logging(log_format, log_level)
    try:
        token = token_file.read_text().strip() if token_file is not None else None
    except OSError as e:
        raise click.ClickException(
            f"cannot read token file {token_file} (--token-file): {e.strerror or e}"
        ) from None
    config = RecoveryConfig(
        http_timeout=http_timeout,
        connect_timeout=connect_timeout,
        no_data_timeout=no_data_timeout,
        heartbeat_timeout=heartbeat_timeout,
    )
    try:
        trio.run(_run, node, token, config, min_interval, long_poll)
    except SafekeeperError as e:
        # One line, however much the answer said (a web server's HTML error page).
        text = " ".join(str(e).split())
        raise click.ClickException(
            f"{node}: {text[:300]}{' …' if len(text) > 300 else ''} (is --node a "
            "safekeeper's HTTP API, and the token right?)"
        ) from None


async def _run(node_url: str, token: str | None, config: RecoveryConfig,
               min_interval: float, long_poll: float) -> None:
    """Run until SIGINT or SIGTERM, then cancel the engine and exit 0. (Catching
    KeyboardInterrupt does not work: trio delivers it wrapped in an exception group.)
    A node that is not up yet is waited for; one that refuses us (a wrong URL, auth)
    ends the run with that error, unwrapped, for one ``Error:`` line."""
    failed: list[SafekeeperError] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def run_sidecar() -> None:
                try:
                    await serve_sidecar(node_url, token=token, config=config,
                                        min_interval=min_interval, long_poll=long_poll)
                except SafekeeperError as e:
                    failed.append(e)
                    nursery.cancel_scope.cancel()

            nursery.start_soon(run_sidecar)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    if failed:
        raise failed[0]
