"""``propose``: elect a proposer over the listed safekeepers and write WAL: generated test
WAL, or (``--from-postgres``) the WAL of a live PostgreSQL."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import trio
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from .._console import BinaryRateColumn
from ..core import Lsn, SafekeeperError, TenantId, TimelineId
from ..pgwal import validate_seg_size
from ..proposer import (
    Proposer,
    ProposerConfig,
    ProposeResult,
    WalFormat,
    paced,
    wal_source_factory,
    websocket_connector,
    websocket_fetcher,
)
from ._errors import failure
from ._main import main
from ._options import (
    DURATION,
    LSN,
    SIZE,
    UrlListType,
    tenant_timeline_options,
    token_file_option,
)

__all__ = ["propose_command"]


def _seg_size(_: click.Context, __: click.Parameter, value: int) -> int:
    try:
        return validate_seg_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@main.command("propose")
@click.option(
    "--safekeepers",
    required=True,
    type=UrlListType("ws"),
    help="The nodes' WAL ports (--listen-wal), comma-separated: ws://HOST:PORT,ws://HOST:PORT,...",
)
@tenant_timeline_options
@click.option(
    "--bytes",
    "nbytes",
    type=SIZE,
    default="64MiB",
    show_default=True,
    help="How much WAL to write: 1000, 64MiB, 1GiB.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option(
    "--rate",
    type=SIZE,
    default=None,
    help="Write at most this many bytes per second (e.g. 8MiB), like a server under steady "
    "load: the proposer keeps streaming for --bytes / --rate seconds (default: as fast as "
    "the quorum takes it).",
)
@click.option(
    "--wal-format",
    type=click.Choice(["pg", "random"]),
    default="pg",
    show_default=True,
    help="pg: well-formed PostgreSQL 15 WAL (XLOG_NOOP records; check it with `verify` or "
    "pg_waldump); random: pseudo-random bytes.",
)
@click.option(
    "--wal-seg-size",
    type=SIZE,
    default="16MiB",
    show_default=True,
    callback=_seg_size,
    help="The timeline's WAL segment size, which pg WAL is laid out for (a node whose "
    "timeline has another one refuses the greeting). Ignored with --wal-format random.",
)
@token_file_option("File holding a JWT (tenant scope) for nodes with auth on.")
@click.option(
    "--start-lsn",
    type=LSN,
    help="Refuse to write unless the quorum's WAL ends exactly here (default: continue "
    "from what the quorum holds).",
)
@click.option("--connect-timeout", type=DURATION, default="10s", show_default=True,
              help="Timeout of one connect to a node's WAL port.")
@click.option(
    "--lost-quorum-timeout",
    type=DURATION,
    default="3s",
    show_default=True,
    help="How long fewer than a quorum may be reachable before giving up.",
)
@click.option(
    "--election-grace",
    type=DURATION,
    default="0.5s",
    show_default=True,
    help="Once a quorum has answered, how long the other nodes get to join the election "
    "(a node that answers later joins the stream at its common point).",
)
@click.option(
    "--from-postgres",
    "conninfo",
    metavar="CONNINFO",
    help="Ingest a live PostgreSQL's WAL instead of generating it: a libpq connection "
    "string, e.g. \"host=127.0.0.1 port=5432 user=postgres\" (physical replication).",
)
@click.option(
    "--slot",
    default="safekeeper_recovery",
    show_default=True,
    help="With --from-postgres: the physical replication slot (created if missing).",
)
@click.option(
    "--stop-at-lsn",
    type=LSN,
    help="With --from-postgres: stop once the WAL up to this LSN is committed "
    "(default: run until SIGINT/SIGTERM, then commit what was received).",
)
@click.option(
    "--create-timeline-on",
    type=UrlListType("http"),
    default=None,
    help="With --from-postgres: comma-separated HTTP URLs of nodes on which to create the "
    "timeline from the server's parameters first (an existing timeline is kept).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar (default: when stdout is a terminal).",
)
def propose_command(
    safekeepers: tuple[str, ...],
    tenant_id: TenantId,
    timeline_id: TimelineId,
    nbytes: int,
    seed: int,
    rate: int | None,
    wal_format: WalFormat,
    wal_seg_size: int,
    token_file: Path | None,
    start_lsn: Lsn | None,
    connect_timeout: float,
    lost_quorum_timeout: float,
    election_grace: float,
    conninfo: str | None,
    slot: str,
    stop_at_lsn: Lsn | None,
    create_timeline_on: tuple[str, ...] | None,
    progress: bool | None,
) -> None:
    """Elect a proposer over a quorum of SAFEKEEPERS and write deterministic WAL.

    Succeeds, printing a one-line summary, once the WAL is committed on a quorum; exits
    non-zero with the reason otherwise (lost quorum, a newer term took over, ...).
    """
    tenant, timeline = tenant_id, timeline_id
    token = token_file.read_text().strip() if token_file is not None else None
    if conninfo is not None:
        # Imported here: psycopg takes about 0.15 s to import, and every command (``serve``
        # included, whose start-up delays a restarted node's return) loads this module.
        from ..postgres import IngestOptions, run_ingest

        _refuse_generator_options()
        opts = IngestOptions(
            conninfo, safekeepers, tenant, timeline, slot=slot, stop_at=stop_at_lsn,
            create_timeline_on=create_timeline_on or (),
            token=token, connect_timeout=connect_timeout,
            lost_quorum_timeout=lost_quorum_timeout, election_grace=election_grace,
        )
        try:
            result = trio.run(run_ingest, opts)
        except SafekeeperError as e:
            raise failure(str(e)) from None
        click.echo(result.summary())
        return
    if stop_at_lsn is not None or create_timeline_on:
        raise click.UsageError("--stop-at-lsn and --create-timeline-on need --from-postgres")
    config = ProposerConfig(
        safekeepers,
        tenant,
        timeline,
        nbytes,
        seed=seed,
        expect_start_lsn=start_lsn,
        lost_quorum_timeout=lost_quorum_timeout,
        election_grace=election_grace,
        wal_format=wal_format,
        wal_seg_size=wal_seg_size if wal_format == "pg" else 0,
    )
    if rate is not None and rate <= 0:
        raise click.BadParameter("must be above 0", param_hint="--rate")
    proposer = Proposer(
        config,
        websocket_connector(tenant, timeline, token=token, connect_timeout=connect_timeout),
        fetch_wal=websocket_fetcher(tenant, timeline, token=token, connect_timeout=connect_timeout),
        wal_source=None if rate is None else paced(wal_source_factory(config), rate),
    )
    show = sys.stdout.isatty() if progress is None else progress
    try:
        result = trio.run(_run, proposer, show)
    except SafekeeperError as e:
        raise failure(str(e)) from None
    click.echo(result.summary())


_GENERATOR_OPTIONS = {"nbytes": "--bytes", "seed": "--seed", "rate": "--rate",
                      "wal_format": "--wal-format",
                      "wal_seg_size": "--wal-seg-size", "start_lsn": "--start-lsn"}


def _refuse_generator_options() -> None:
    """With --from-postgres the WAL, its size and layout come from the server: an option
    that shapes generated WAL would be silently ignored, so it is an error."""
    ctx = click.get_current_context()
    given = [flag for name, flag in _GENERATOR_OPTIONS.items()
             if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)]
    if given:
        raise click.UsageError(
            f"{', '.join(given)} shape generated WAL and cannot be used with --from-postgres "
            "(PostgreSQL's WAL, segment size and position are used as they are)")


async def _run(proposer: Proposer, show_progress: bool) -> ProposeResult:
    if not show_progress:
        return await proposer.run()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        BinaryRateColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task("electing", total=proposer.statistics().total_bytes)
        async with trio.open_nursery() as nursery:

            async def refresh() -> None:
                while True:
                    stats = proposer.statistics()
                    label = f"term {stats.term} {stats.phase}" if stats.term else stats.phase
                    bar.update(
                        task, completed=stats.committed_bytes, total=stats.total_bytes,
                        description=label,
                    )  # total: pg WAL ends at a record boundary, a few bytes short at most
                    await trio.sleep(0.1)

            nursery.start_soon(refresh)
            result = await proposer.run()
            nursery.cancel_scope.cancel()
        bar.update(
            task, completed=result.bytes, total=result.bytes,
            description=f"term {result.term} done",
        )
    return result
