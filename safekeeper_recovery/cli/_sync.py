"""``sync``: Neon's sync-safekeepers. Elect over a quorum in a new term, bring it to the most
advanced WAL, commit that, print the commit LSN and exit (before a failover)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final, NoReturn

import click
import trio

from ..core import SafekeeperError, TenantId, TimelineId
from ..proposer import (
    LostQuorumError,
    NewerTermError,
    ProposerConfig,
    SyncResult,
    sync_safekeepers,
    websocket_connector,
    websocket_fetcher,
)
from ._errors import with_code_links
from ._main import main
from ._options import DURATION, UrlListType, tenant_timeline_options, token_file_option

__all__ = ["EXIT_ERROR", "EXIT_NEWER_TERM", "EXIT_NO_QUORUM", "EXIT_SYNCED", "sync_command"]

EXIT_SYNCED: Final = 0
EXIT_ERROR: Final = 1
EXIT_NO_QUORUM: Final = 3
EXIT_NEWER_TERM: Final = 4


@main.command("sync")
@click.option(
    "--safekeepers",
    required=True,
    type=UrlListType("ws"),
    help="The nodes' WAL ports (--listen-wal), comma-separated: ws://HOST:PORT,ws://HOST:PORT,...",
)
@tenant_timeline_options
@token_file_option("File holding a JWT (tenant scope) for nodes with auth on.")
@click.option("--connect-timeout", type=DURATION, default="10s", show_default=True,
              help="Timeout of one connect to a node's WAL port.")
@click.option("--lost-quorum-timeout", type=DURATION, default="3s", show_default=True,
              help="How long fewer than a quorum may be reachable before giving up.")
@click.option("--election-grace", type=DURATION, default="0.5s", show_default=True,
              help="Once a quorum has answered, how long the other nodes get to join the "
              "election.")
@click.option("--drain-timeout", type=DURATION, default="5s", show_default=True,
              help="Once a quorum is synced, how long the other nodes that took part get to "
              "catch up before the command exits.")
@click.option("--timeout", type=DURATION, default="120s", show_default=True,
              help="Give up (exit 1) if the sync has not finished by then.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result (or the error) as JSON on stdout.")
def sync_command(
    safekeepers: tuple[str, ...],
    tenant_id: TenantId,
    timeline_id: TimelineId,
    token_file: Path | None,
    connect_timeout: float,
    lost_quorum_timeout: float,
    election_grace: float,
    drain_timeout: float,
    timeout: float,
    as_json: bool,
) -> None:
    """Commit whatever a quorum of SAFEKEEPERS holds and print the commit LSN.

    Run it after the writer (an ingest from PostgreSQL, a proposer) died and before a
    standby streaming from the safekeepers is promoted: the last commit LSN a dead writer
    sent may be behind what it had acknowledged. The sync is elected in a new term, catches
    up the nodes that lag from the most advanced one, and commits exactly the WAL that one
    holds (it writes none of its own). A writer still running loses its term: stop it first.

    Exit status: 0 synced (prints the commit LSN), 3 fewer than a quorum reachable,
    4 another proposer took over meanwhile, 1 any other failure, 2 bad usage.
    """
    token = token_file.read_text().strip() if token_file is not None else None
    config = ProposerConfig(
        safekeepers, tenant_id, timeline_id, 0,
        lost_quorum_timeout=lost_quorum_timeout, election_grace=election_grace,
        drain_timeout=drain_timeout,
    )

    async def run() -> SyncResult:
        with trio.fail_after(timeout):
            return await sync_safekeepers(
                config,
                websocket_connector(tenant_id, timeline_id, token=token,
                                    connect_timeout=connect_timeout),
                fetch_wal=websocket_fetcher(tenant_id, timeline_id, token=token,
                                            connect_timeout=connect_timeout),
            )

    try:
        result = trio.run(run)
    except LostQuorumError as e:
        _fail(as_json, "no_quorum", str(e), EXIT_NO_QUORUM)
    except NewerTermError as e:
        _fail(as_json, "newer_term", str(e), EXIT_NEWER_TERM)
    except trio.TooSlowError:
        _fail(as_json, "timeout", f"the sync did not finish within {timeout:g}s", EXIT_ERROR)
    except SafekeeperError as e:
        _fail(as_json, "error", str(e), EXIT_ERROR)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(result.summary(), err=True)
        click.echo(str(result.commit_lsn))


def _fail(as_json: bool, kind: str, message: str, code: int) -> NoReturn:
    """One ``Error:`` line on stderr (and, with --json, the error on stdout); exit ``code``."""
    message = with_code_links(message)
    if as_json:
        click.echo(json.dumps({"error": kind, "message": message}, indent=2, sort_keys=True))
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(code)
