"""One ingest run: PostgreSQL → proposer → safekeepers, ended by ``stop_at`` or a signal.

:func:`run_ingest` prepares the slot (:func:`prepare_ingest`), optionally creates the
timeline on the listed HTTP endpoints from the server's parameters, elects a proposer whose
WAL source is a :class:`PostgresWalSource` at the term start, and returns once the source's
end is committed on a quorum. SIGINT/SIGTERM end the source at what it holds (the run
commits that and returns normally); a second signal aborts the run (``Cancelled`` is not
swallowed: the caller's ``trio.run`` raises :class:`IngestInterrupted`).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence

import attrs
import trio

from ..core import Lsn, SafekeeperError, TenantId, TenantTimelineId, TimelineId
from ..proposer import (
    Election,
    Proposer,
    ProposerConfig,
    ProposeResult,
    websocket_connector,
    websocket_fetcher,
)
from ..transport import HttpError, HttpUnavailable, SafekeeperClient
from ._ingest import DEFAULT_SLOT, IngestPlan, PostgresWalSource, prepare_ingest

__all__ = [
    "CreateQuorumUnreachable",
    "IngestInterrupted",
    "IngestOptions",
    "create_timelines",
    "run_ingest",
]

log = logging.getLogger(__name__)


class IngestInterrupted(SafekeeperError):
    """A second signal (or one before the election) stopped the run before its end."""


class CreateQuorumUnreachable(SafekeeperError):
    """Fewer than a quorum of the nodes to create the timeline on could be reached."""


@attrs.frozen
class IngestOptions:
    conninfo: str
    safekeepers: tuple[str, ...]
    tenant_id: TenantId
    timeline_id: TimelineId
    slot: str = DEFAULT_SLOT
    stop_at: Lsn | None = None
    create_timeline_on: tuple[str, ...] = ()
    """HTTP URLs of nodes on which to create the timeline from the server's parameters."""
    token: str | None = None
    connect_timeout: float = 10.0
    lost_quorum_timeout: float = 3.0
    election_grace: float = 0.5


async def create_timelines(plan: IngestPlan, ttid: TenantTimelineId, urls: Sequence[str],
                           token: str | None, *, timeout: float = 10.0) -> list[str]:
    """Create the timeline at ``plan.timeline_start`` on each node, all at once; return the
    URLs skipped because they could not be reached.

    An existing timeline (409) is kept: the safekeepers' greeting checks then refuse a
    mismatching server. A node that cannot be reached (down, restarting: no answer within
    ``timeout`` seconds) is skipped with a one-line warning, as long as a quorum of
    ``urls`` has the timeline; it gets the timeline when it is back (``timeline create``
    with the same start and segment size, then peer recovery fills it). Raises
    :class:`CreateQuorumUnreachable` when fewer than a quorum could be reached, and the
    :class:`~safekeeper_recovery.transport.HttpError` of a node that answered with any
    other error (a mismatching timeline, auth).
    """
    ident = plan.identity
    unreachable: dict[str, HttpUnavailable] = {}
    refused: list[HttpError] = []

    async def create(url: str) -> None:
        async with SafekeeperClient(url, token=token, timeout=timeout) as client:
            try:
                await client.create_timeline(
                    ttid, plan.timeline_start, wal_seg_size=ident.wal_seg_size,
                    pg_version=ident.pg_version, system_id=ident.system_id,
                )
            except HttpUnavailable as e:
                unreachable[url] = e
            except HttpError as e:
                if e.status != 409:
                    refused.append(e)
                    return
                log.info("timeline %s exists on %s; keeping it", ttid, url)

    async with trio.open_nursery() as nursery:
        for url in urls:
            nursery.start_soon(create, url)
    if refused:
        raise refused[0]
    quorum = len(urls) // 2 + 1
    if len(urls) - len(unreachable) < quorum:
        raise CreateQuorumUnreachable(
            f"cannot create timeline {ttid}: only {len(urls) - len(unreachable)} of the "
            f"{len(urls)} nodes to create it on answered, a quorum is {quorum} ("
            + "; ".join(str(e) for e in unreachable.values()) + ")"
        )
    skipped = [url for url in urls if url in unreachable]
    for url in skipped:
        log.warning(
            "skipping %s: cannot reach it to create timeline %s (%s); once it is back, "
            "create the timeline there with the same start and segment size "
            "(`timeline create`), and peer recovery fills it", url, ttid,
            unreachable[url].message,
        )
    return skipped


async def run_ingest(opts: IngestOptions) -> ProposeResult:
    """Stream the server's WAL into the safekeepers until ``stop_at`` or a signal (see the
    module docstring). Raises ``ReplicationError``, ``ProposerError`` (lost quorum, newer
    term, the source failed) or :class:`IngestInterrupted`."""
    plan = await prepare_ingest(opts.conninfo, opts.slot, timeout=opts.connect_timeout)
    ident = plan.identity
    log.info(
        "PostgreSQL system %d timeline %d version %d segment %d; slot %s (%s) restart %s",
        ident.system_id, ident.timeline, ident.pg_version, ident.wal_seg_size, plan.slot,
        "created" if plan.created_slot else "existing", plan.slot_restart_lsn,
    )
    ttid = TenantTimelineId(opts.tenant_id, opts.timeline_id)
    if opts.create_timeline_on:
        await create_timelines(plan, ttid, opts.create_timeline_on, opts.token,
                               timeout=opts.connect_timeout)
    config = ProposerConfig(
        opts.safekeepers, opts.tenant_id, opts.timeline_id, 0,
        lost_quorum_timeout=opts.lost_quorum_timeout, election_grace=opts.election_grace,
        pg_version=ident.pg_version, system_id=ident.system_id,
        wal_seg_size=ident.wal_seg_size,
    )
    sources: list[PostgresWalSource] = []

    def make_source(election: Election) -> PostgresWalSource:
        start = election.term_start_lsn
        log.info("streaming from PostgreSQL at %s", start)
        source = PostgresWalSource(opts.conninfo, plan, start, stop_at=opts.stop_at,
                                   timeout=max(opts.connect_timeout, 30.0))
        sources.append(source)
        return source

    proposer = Proposer(
        config,
        websocket_connector(opts.tenant_id, opts.timeline_id, token=opts.token,
                            connect_timeout=opts.connect_timeout),
        fetch_wal=websocket_fetcher(opts.tenant_id, opts.timeline_id, token=opts.token,
                                    connect_timeout=opts.connect_timeout),
        wal_source=make_source,
    )
    result: list[ProposeResult] = []
    interrupted = False

    async def watch_signals(scope: trio.CancelScope) -> None:
        nonlocal interrupted
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if sources and sources[0].final_end is None:
                    log.info("signal %d: committing what was received, then stopping", signum)
                    sources[0].finish()
                    continue
                interrupted = True
                scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_signals, nursery.cancel_scope)
        result.append(await proposer.run())
        nursery.cancel_scope.cancel()
    if interrupted and not result:
        raise IngestInterrupted("interrupted before the received WAL was committed")
    return result[0]
