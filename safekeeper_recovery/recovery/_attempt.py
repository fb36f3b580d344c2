"""One recovery attempt from one donor (reference §5.3, made production-grade).

Structure: after the handshake (donor status, local vote, common point, local
ProposerElected) one nursery holds three siblings linked by memory channels —

* ``network_io``: donor WAL stream → AppendRequests into ``messages`` (32), status
  updates back to the donor (every 0.1 s and on keepalives), the caught-up /
  still-a-donor / proposer-connected checks;
* the WAL acceptor: ``messages`` → local acceptor → ``replies`` (16);
* ``read_replies``: every reply must carry the donor's term (else :class:`TermChanged`).

Whichever sibling ends the attempt decides the outcome; the cancel scope tears down the
others (trio's answer to ``select!``). A clean catch-up closes ``messages`` instead of
cancelling, so the acceptor flushes what it received before the attempt ends.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import attrs
import trio

from ..core import (
    MAX_SEND_SIZE,
    AcceptorError,
    AcceptorMessage,
    AppendRequest,
    AppendResponse,
    DonorUnavailable,
    Keepalive,
    Lsn,
    NoCommonPoint,
    PeerInfo,
    ProposerArrived,
    ProposerElected,
    RecoveryError,
    SafekeeperError,
    StatusUpdate,
    TermChanged,
    WalData,
    find_highest_common_point,
    leaves,
)
from ._donor import DonorConnector, DonorStream
from ._status import RecoveryStatus
from ._target import AcceptorSession, RecoveryTarget, select_for

__all__ = ["AttemptCancelled", "AttemptResult", "DonorTimeout", "RecoveryConfig", "run_attempt"]

log = logging.getLogger(__name__)

RECOVERY_QUEUE_BYTES = 8 * MAX_SEND_SIZE
MESSAGE_QUEUE_SIZE = RECOVERY_QUEUE_BYTES // MAX_SEND_SIZE
"""AppendRequests queued for the local acceptor (the seed queues 256). The bound is in
bytes, ``RECOVERY_QUEUE_BYTES`` (8 MiB), whatever the WAL size: a donor's WalData carries
at most ``MAX_SEND_SIZE`` (1 MiB), so 8 messages never hold more. trio-websocket already holds
up to 4 decoded frames ahead of ``network_io`` and the kernel's socket buffers several MiB
more, so a longer queue buys no speed: measured interleaved on the benchmark machine (1 GiB
and 256 MiB recoveries, 4 each), 4, 8 and 12 all gave 390-540 MB/s. It does buy peak
memory: the peak RSS of a recovering node is its baseline plus what of the pipeline's
buffers an fsync stall happened to fill (and a few MiB of heap fragmentation that levels
off: 3 GiB peaked like 1 GiB), so a longer recovery, with more stalls, peaks higher, up to
the bound. Peak RSS at 256 MiB / 1 GiB: 4 gave 94-98 / 101-106 MiB, 8 gave 95-104 /
102-105, 12 gave 102-105 / 105-111, 32 gave 95-131 at 1 GiB."""
REPLY_QUEUE_SIZE = 16
STATUS_INTERVAL = 0.1
"""While WAL flows, a StatusUpdate goes to the donor at most this often (seconds).

The seed answers every message; the donor only records the position (its status JSON), and
a reply per chunk (then 128 KiB) cost the recipient a socket send each — a sixth of its CPU.
Keepalives are still answered at once."""


class DonorTimeout(DonorUnavailable):
    """The donor did not answer within a configured timeout."""

    outcome = "timeout"


class AttemptCancelled(RecoveryError):
    """An operator cancelled the attempt (``POST …/recovery/cancel``)."""

    outcome = "cancelled"


@attrs.frozen
class RecoveryConfig:
    """Every timeout explicit and configurable (DESIGN.md "Network")."""

    http_timeout: float = 10.0
    connect_timeout: float = 10.0
    no_data_timeout: float = 30.0
    heartbeat_timeout: float = 5.0
    fallback_tick: float = 60.0
    """Re-check even without a change notification, as a safety net: every event that can
    create a donor (peer news, local changes) wakes the supervisor already. Jittered, so
    thousands of idle timelines never tick together."""
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_concurrent: int = 8
    caught_up_grace: float = 0.1
    """Once the WAL received reaches the end the donor reported with its last chunk, the
    attempt ends as caught up if nothing more arrives within this many seconds, instead of
    waiting for the donor's idle keepalive (1 s by default). Applies only when shorter
    than ``no_data_timeout`` (a longer grace turns it off). An attempt holds one of the
    ``max_concurrent`` slots until it ends: waiting out the keepalive capped a node coming
    back to hundreds of lagging timelines at 8 recoveries a second, whatever their size.
    A donor whose WAL is still growing (a proposer writing to it) sends its next chunk as
    soon as it is flushed, well within the grace, and the attempt goes on. While other
    timelines wait for a slot the grace is not waited out at all (``run_attempt``'s
    ``contended``): on a node coming back to 100 timelines of 64 KiB each it was half of an
    attempt's wall time (docs/throttles.md)."""


@attrs.frozen
class AttemptResult:
    """The attempt's one typed outcome. ``error`` is ``None`` for a clean catch-up."""

    donor: PeerInfo
    error: RecoveryError | None
    message: str
    start_lsn: Lsn
    end_lsn: Lsn
    bytes: int

    @property
    def outcome(self) -> str:
        return "caught_up" if self.error is None else self.error.outcome


class _Finished(Exception):
    """Internal: network_io's clean end (caught up / not a donor anymore)."""


async def run_attempt(
    target: RecoveryTarget,
    donor: PeerInfo,
    connector: DonorConnector,
    config: RecoveryConfig,
    status: RecoveryStatus,
    *,
    now: Callable[[], float] = trio.current_time,
    pay: Callable[[int], Awaitable[None]] | None = None,
    contended: Callable[[], bool] = lambda: False,
) -> AttemptResult:
    """Recover from ``donor`` until caught up or something ends the attempt.

    ``pay`` (the engine's intake throttle) is awaited with the size of every WAL message
    received before the next one is read, so a throttled attempt backs the donor off
    through TCP flow control.

    ``contended`` (the engine: other timelines wait for a recovery slot) is asked once the
    WAL received reaches the end the donor reported: if it says so, the attempt ends as
    caught up at once instead of waiting out ``caught_up_grace`` in a slot others need.

    Never raises for protocol outcomes (they are the result's ``error``); lets
    ``trio.Cancelled`` through (timeline deleted, admin cancel, shutdown).
    """
    progress = _Progress(start=Lsn(0), received=Lsn(0), pay=pay, contended=contended)
    try:
        message = await _attempt(target, donor, connector, config, status, progress)
        return AttemptResult(donor, None, message, progress.start, progress.received,
                             progress.bytes)
    except RecoveryError as e:
        return AttemptResult(donor, e, str(e), progress.start, progress.received, progress.bytes)
    except (AcceptorError, SafekeeperError) as e:
        err = RecoveryError(f"local acceptor refused: {e}")
        return AttemptResult(donor, err, str(err), progress.start, progress.received,
                             progress.bytes)


@attrs.define
class _Progress:
    start: Lsn
    received: Lsn
    bytes: int = 0
    pay: Callable[[int], Awaitable[None]] | None = None
    contended: Callable[[], bool] = lambda: False


async def _attempt(
    target: RecoveryTarget,
    donor: PeerInfo,
    connector: DonorConnector,
    config: RecoveryConfig,
    status: RecoveryStatus,
    progress: _Progress,
) -> str:
    ttid = target.ttid
    # 1-3. The donor's own word on its term and history (the peer info may be stale).
    with trio.move_on_after(config.http_timeout) as http_scope:
        donor_status = await connector.fetch_status(donor, ttid)
    if http_scope.cancelled_caught:
        raise DonorTimeout(f"donor {donor.node_id} status: no answer in {config.http_timeout}s")
    if donor_status.term != donor.term:
        raise TermChanged(f"donor term changed from {donor.term} to {donor_status.term}")
    donor_th = donor_status.term_history

    async with target.open_session() as session:
        # 4. Vote locally in the donor's term: harmless, that term's leader is elected.
        vote = await session.vote(donor.term)
        if vote.term != donor.term:
            raise TermChanged(f"our term changed from {donor.term} to {vote.term}")
        # 5. Where our WAL stops agreeing with the donor's history.
        lcp = find_highest_common_point(donor_th, vote.term_history, vote.flush_lsn)
        if lcp is None:
            raise NoCommonPoint(
                f"no common point in histories: donor {donor.node_id} {donor_th}, "
                f"ours {vote.term_history}"
            )
        log.info("found last common point", extra={"lcp": str(lcp), "donor": int(donor.node_id)})
        # 6. Truncate our divergent tail and adopt the donor's history, via the acceptor.
        try:
            await session.elected(ProposerElected(donor.term, lcp.lsn, donor_th))
        except AcceptorError as e:
            raise RecoveryError(f"ProposerElected handling: {e}") from e
        progress.start = progress.received = lcp.lsn
        status.attempt_started(donor, lcp.lsn)
        # 7-11. Stream. The connector applies the connect timeout itself (a cancel scope
        # around entering a context manager would misnest its nursery). A proposer that
        # connects while the donor has not answered the handshake yet ends the attempt at
        # once: _stream watches for it only once the stream is open, and a donor that
        # hangs in the handshake would otherwise hold the attempt for the connect timeout
        # and end it as a donor error (seen with a donor frozen mid-handshake).
        result: list[str] = []
        connected = trio.CancelScope()

        async def connect_and_stream() -> None:
            async with connector.open_stream(donor, ttid, lcp.lsn, donor.term) as stream:
                connected.cancel()  # the stream watches from here on
                result.append(
                    await _stream(target, donor, session, stream, config, status, progress))

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(connect_and_stream)
                with connected:
                    await _watch_local(target, session, donor)
        except BaseExceptionGroup as group:
            raise _outcome_of(group) from None
        return result[0]


async def _stream(
    target: RecoveryTarget,
    donor: PeerInfo,
    session: AcceptorSession,
    stream: DonorStream,
    config: RecoveryConfig,
    status: RecoveryStatus,
    progress: _Progress,
) -> str:
    send_msg, recv_msg = trio.open_memory_channel[AppendRequest](MESSAGE_QUEUE_SIZE)
    send_reply, recv_reply = trio.open_memory_channel[AcceptorMessage](REPLY_QUEUE_SIZE)
    result: list[str] = []

    async def network_io() -> None:
        async with send_msg:
            result.append(await _network_io(target, donor, session, stream, send_msg, config,
                                            status, progress))
        # Closing `send_msg` lets the acceptor drain, flush and close `replies`.

    async def acceptor() -> None:
        await session.run_acceptor(recv_msg, send_reply)

    watch_scope = trio.CancelScope()

    async def read_replies() -> None:
        async with recv_reply:
            async for reply in recv_reply:
                if reply.term != donor.term:
                    # Despite Neon's wording this is *our* term: a proposer voted us higher.
                    raise TermChanged(
                        f"our term changed from {donor.term} to {reply.term} during recovery"
                    )
                if isinstance(reply, AppendResponse):
                    status.flushed(reply.flush_lsn)
        watch_scope.cancel()  # the replies ended cleanly: the attempt is over

    async def watch_local() -> None:
        # A proposer connecting (or voting us into a higher term) must end the attempt
        # even while the donor is silent, not only when the next message arrives.
        with watch_scope:
            await _watch_local(target, session, donor)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(network_io)
            nursery.start_soon(acceptor)
            nursery.start_soon(read_replies)
            nursery.start_soon(watch_local)
    except BaseExceptionGroup as group:
        # The first sibling to fail cancelled the others; its error is the outcome.
        raise _outcome_of(group) from None
    # Every sibling ended without an error: network_io finished cleanly.
    return result[0]


async def _watch_local(target: RecoveryTarget, session: AcceptorSession,
                       donor: PeerInfo) -> None:
    """Raise ``ProposerArrived`` once a proposer connects to this node, ``TermChanged``
    once our term leaves the donor's; never returns otherwise."""
    while True:
        if session.proposer_connected():
            raise ProposerArrived("a proposer connected to this node")
        view = await target.local_view()
        if view.term != donor.term:
            raise TermChanged(
                f"our term changed from {donor.term} to {view.term} during recovery"
            )
        await target.wait_for_change()


def _outcome_of(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error that ended the attempt: a recovery outcome if there is one."""
    inside = leaves(group)
    for e in inside:
        if isinstance(e, RecoveryError):
            return e
    for e in inside:
        if not isinstance(e, trio.Cancelled):
            return e
    return inside[0]


async def _network_io(
    target: RecoveryTarget,
    donor: PeerInfo,
    session: AcceptorSession,
    stream: DonorStream,
    messages: trio.MemorySendChannel[AppendRequest],
    config: RecoveryConfig,
    status: RecoveryStatus,
    progress: _Progress,
) -> str:
    last_status = -math.inf
    at_donor_end = False  # received everything the donor had when it sent its last chunk
    while True:
        grace = at_donor_end and config.caught_up_grace < config.no_data_timeout
        wait = config.caught_up_grace if grace else config.no_data_timeout
        with trio.move_on_after(wait) as data_scope:
            msg = await stream.receive()
        if data_scope.cancelled_caught:
            if grace:
                return (
                    f"caught up at {progress.received} with donor {donor.node_id} "
                    f"(term {donor.term}): nothing more within {wait}s"
                )
            raise DonorTimeout(
                f"no message from donor {donor.node_id} within {config.no_data_timeout}s"
            )
        at_donor_end = False
        if isinstance(msg, WalData):
            if msg.start_lsn != progress.received:
                raise DonorUnavailable(
                    f"donor sent WAL from {msg.start_lsn}, expected {progress.received}"
                )
            # A proposer that connected to us wins: stop within one batch, before queueing
            # more data that the node would only refuse.
            if session.proposer_connected():
                raise ProposerArrived("a proposer connected to this node")
            if msg.data:
                if progress.pay is not None:
                    await progress.pay(len(msg.data))
                await messages.send(AppendRequest(donor.term, msg.start_lsn, Lsn(0), Lsn(0),
                                                  msg.data))
                progress.received = msg.end_lsn
                progress.bytes += len(msg.data)
                status.received(progress.received, len(msg.data), msg.wal_end)
            at_donor_end = progress.received >= msg.wal_end
            if at_donor_end and progress.contended():
                # Everything the donor had is queued for the acceptor, which flushes it
                # before the attempt ends; a timeline still growing queues again.
                return (
                    f"caught up at {progress.received} with donor {donor.node_id} "
                    f"(term {donor.term}): others wait for the slot"
                )
        elif isinstance(msg, Keepalive):
            status.received(progress.received, 0, msg.wal_end)
            if session.proposer_connected():
                raise ProposerArrived("a proposer connected to this node")
            # The donor had nothing more for a while. Caught up with what it has, or no
            # longer a donor at all (its term moved, a peer overtook it, …): done.
            if progress.received >= msg.wal_end:
                return (
                    f"caught up at {progress.received} with donor {donor.node_id} "
                    f"(term {donor.term})"
                )
            view = await target.local_view()
            selection = select_for(target.node_id, view, config.heartbeat_timeout)
            if donor.node_id not in {d.node_id for d in selection.donors}:
                return (
                    f"terminating at {progress.received}: donor {donor.node_id} "
                    f"(term {donor.term}) is not a donor anymore: {selection}"
                )
        now = trio.current_time()
        if isinstance(msg, Keepalive) or now - last_status >= STATUS_INTERVAL:
            last_status = now
            await stream.send_status(
                StatusUpdate(progress.received, progress.received, progress.received,
                             math.floor(now * 1e6), False)
            )
