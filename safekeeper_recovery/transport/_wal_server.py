"""The WAL port: a trio-websocket server routing ``wal_push`` and ``wal_stream``.

Handshake (before anything is accepted): the target is parsed strictly, the bearer token
checked, the timeline looked up; failures reject the HTTP upgrade with 400 / 401 / 403 /
404 and a JSON body ``{"error": "..."}``.

After the handshake every connection ends with a close code that says why
(docs/architecture.md "Close codes"): 1000 normal end, 1002 protocol error, 1009 too big
(sent by trio-websocket itself), 1011 internal error / stopped timeline, 4000 stream
refused because the term moved, 4001 stream refused because the WAL was removed, 4004
timeline deleted, 4008 idle (a push client silent, or a stream reader taking nothing, for
``idle_timeout``), 4009 acceptor refusal, 4010 a recovery push ended because a proposer
connected to the timeline (recovery yields), 4011 a stream asked for WAL this node removed
and its archive could not serve (``ArchivedWalUnreadable``), 4012 an append refused
because the disk is past ``--max-disk-usage`` (``DiskUsageExceeded``, rule U2). A handler
never
lets an exception escape: trio-websocket would take the whole server down with it.

A stopped (broken) timeline refuses ``wal_push`` handshakes with 503 and
``{"error": "timeline stopped: <reason>"}``; a push connection open when it stops is closed
with 1011 and the reason ``timeline stopped: <reason>`` (e.g. ``disk full: …``).
``wal_stream`` keeps serving its durable WAL.

Recovery streams (``wal_stream`` with a term) obey the node's throttles
(``recovery.RecoveryThrottles``): beyond ``max_senders`` running ones a new one is refused
with 503 and ``{"error": "donor busy: …", "reason": "donor_busy"}`` (the recovering node
raises ``DonorBusy`` and tries another donor or backs off), and every WAL byte sent pays
the ``serve`` rate limit (``_serve_throttle.py``, which snapshots of a pull pay too); both
exempt a timeline whose quorum is at risk (core rule T6).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Final, Literal, NoReturn, final

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)

from ..core import (
    MAX_MESSAGE_SIZE,
    AcceptorError,
    AuthError,
    DiskUsageExceeded,
    Lsn,
    ProposerArrived,
    RemoteProtocolError,
    StreamStopped,
    TenantTimelineId,
    Term,
)
from ..recovery import RecoveryThrottles
from ..storage import Archive
from ..timeline import Timeline, TimelineBroken, TimelineNotFound, TimelineRegistry
from ._auth import Authenticator, bearer_token
from ._connections import ConnectionSlots
from ._paths import BadRequest, check_query, parse_bool, parse_lsn, parse_term, parse_timeline_path
from ._serve_throttle import Payer, quorum_at_risk_here, serve_payer
from ._wal_acceptor import serve_push_connection
from ._wal_sender import WalSenders, serve_stream_connection

__all__ = [
    "CLOSE_ACCEPTOR_REFUSED",
    "CLOSE_PROPOSER_ARRIVED",
    "CLOSE_TIMELINE_DELETED",
    "WalPushTarget",
    "WalServerConfig",
    "WalStreamTarget",
    "parse_wal_target",
    "serve_wal",
    "truncate_close_reason",
]

log = logging.getLogger(__name__)

CLOSE_NORMAL: Final = 1000
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_TIMELINE_DELETED: Final = 4004
CLOSE_ACCEPTOR_REFUSED: Final = 4009
CLOSE_PROPOSER_ARRIVED: Final = 4010
MAX_CLOSE_REASON_BYTES: Final = 123
"""RFC 6455: a close frame's payload is at most 125 bytes, two of them the code."""


@final
@attrs.frozen
class WalServerConfig:
    """Tunables of the WAL port. Defaults follow DESIGN.md "Network"."""

    keepalive_interval: float = 1.0
    """A WAL sender with nothing to send sends a Keepalive after this many idle seconds."""
    flush_interval: float = 1.0
    """A WalAcceptor fsyncs at least this often while appends keep arriving."""
    max_message_size: int = MAX_MESSAGE_SIZE
    """Bigger incoming frames are refused with 1009 before decoding."""
    receive_buffer_size: int = 1024 * 1024
    """trio-websocket's read size; its 4 KiB default costs 4-6x in throughput, and 1 MiB
    splits fewer WAL messages (up to 1 MiB) across reads than 256 KiB."""
    handshake_timeout: float = 10.0
    """A client must finish the opening handshake within this time."""
    close_timeout: float = 5.0
    """How long to wait for the peer's half of the closing handshake."""
    idle_timeout: float = 30.0
    """A ``wal_push`` client silent this long, or a ``wal_stream`` reader that takes
    nothing this long, is closed with 4008."""
    archive: Archive | None = None
    """The node's WAL archive: a ``wal_stream`` asking for WAL this node removed is served
    from it (``run_wal_sender`` rule 5; 4011 if the archive cannot serve it). ``None``:
    such a stream closes with 4001."""
    heartbeat_timeout: float = 5.0
    """A peer counts as alive (for the quorum-at-risk exemption) while its info is
    younger than this."""


@final
@attrs.frozen
class WalPushTarget:
    ttid: TenantTimelineId
    recovery: bool = False


@final
@attrs.frozen
class WalStreamTarget:
    ttid: TenantTimelineId
    start_lsn: Lsn
    term: Term | None = None


def parse_wal_target(target: str) -> WalPushTarget | WalStreamTarget:
    """Parse a WAL-port request target; raise :class:`BadRequest` for anything else."""
    parsed = parse_timeline_path(target)
    query = parsed.query
    if parsed.action == "wal_push":
        check_query(query, {"recovery"})
        recovery = parse_bool(query["recovery"], name="recovery") if "recovery" in query else False
        return WalPushTarget(parsed.ttid, recovery)
    if parsed.action == "wal_stream":
        check_query(query, {"start_lsn", "term"})
        if "start_lsn" not in query:
            raise BadRequest("wal_stream needs a start_lsn query parameter")
        start = parse_lsn(query["start_lsn"], name="start_lsn")
        term = parse_term(query["term"]) if "term" in query else None
        return WalStreamTarget(parsed.ttid, start, term)
    raise BadRequest(
        f"unknown WAL endpoint {parsed.action!r}: expected wal_push or wal_stream"
    )


def truncate_close_reason(reason: str) -> str:
    """Cut ``reason`` to the 123 UTF-8 bytes a close frame allows, never mid-character."""
    raw = reason.encode("utf-8")
    if len(raw) <= MAX_CLOSE_REASON_BYTES:
        return reason
    return raw[: MAX_CLOSE_REASON_BYTES - 3].decode("utf-8", errors="ignore") + "..."


async def serve_wal(
    registry: TimelineRegistry,
    authenticator: Authenticator,
    host: str,
    port: int,
    *,
    config: WalServerConfig | None = None,
    slots: ConnectionSlots | None = None,
    senders: WalSenders | None = None,
    throttles: RecoveryThrottles | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the WAL port on ``host:port`` until cancelled.

    ``port`` 0 picks a free port; ``task_status.started`` reports the bound port, so
    ``port = await nursery.start(serve_wal, ...)``. Never returns unless cancelled;
    a failing connection never affects the others. With ``slots`` (the node-wide
    connection cap), a connection beyond the cap gets 503 and is closed. Running
    ``wal_stream`` connections are listed in ``senders`` (the node's registry, which its
    status endpoint reads; a private one if not given).
    """
    config = config if config is not None else WalServerConfig()
    senders = senders if senders is not None else WalSenders()
    handler = functools.partial(_handle_request, registry, authenticator, config, senders,
                                throttles, trio.current_time())
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    serve_one = functools.partial(_serve_stream, handler, config)
    if slots is not None:
        serve_one = functools.partial(slots.serve, serve_one=serve_one)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, serve_one, listeners)
        log.info("WAL port listening on %s:%d", host, bound)
        task_status.started(bound)
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


async def _serve_stream(
    handler: Callable[[WebSocketRequest], Awaitable[None]],
    config: WalServerConfig,
    stream: trio.SocketStream,
) -> None:
    """One TCP connection: the WebSocket handshake, then ``handler``; never raises.

    This replaces ``serve_websocket``, whose per-connection task lets trio-websocket's own
    errors escape and take the whole server down: a client that sends an oversized frame
    while the server is already closing makes its reader task send a second close frame,
    which wsproto refuses with ``LocalProtocolError``. Here such an error ends only its
    connection. The stream is closed as soon as the handler returns (the handler has
    finished the closing handshake or rejected the upgrade by then).
    """
    try:
        async with trio.open_nursery() as nursery:
            request: WebSocketRequest | None = None
            with trio.move_on_after(config.handshake_timeout):
                request = await wrap_server_stream(
                    nursery, stream, max_message_size=config.max_message_size,
                    receive_buffer_size=config.receive_buffer_size,
                )
            if request is not None:
                await handler(request)
            nursery.cancel_scope.cancel()  # stop the connection's reader task
    except Exception as e:  # trio.Cancelled is a BaseException and passes through
        log.warning("WAL port: connection failed inside the WebSocket library: %r", e)
    finally:
        await trio.aclose_forcefully(stream)


async def _handle_request(
    registry: TimelineRegistry,
    authenticator: Authenticator,
    config: WalServerConfig,
    senders: WalSenders,
    throttles: RecoveryThrottles | None,
    listening_since: float,
    request: WebSocketRequest,
) -> None:
    remote = str(request.remote)
    try:
        target = parse_wal_target(request.path)
        authenticator.check(_bearer(request), tenant_id=target.ttid.tenant_id,
                            peer_only=_peer_only(target))
        timeline = registry.get(target.ttid)
        if isinstance(target, WalPushTarget) and timeline.broken is not None:
            await _reject(request, 503, f"timeline stopped: {timeline.broken}", remote)
            return
    except BadRequest as e:
        await _reject(request, 400, str(e), remote)
        return
    except AuthError as e:
        await _reject(request, e.status, str(e), remote)
        return
    except TimelineNotFound as e:
        await _reject(request, 404, str(e), remote)
        return
    except Exception:  # never let one request take down the server
        log.exception("WAL port: handshake with %s failed", remote)
        await _reject(request, 500, "internal error", remote)
        return
    recovery_stream = (throttles is not None and isinstance(target, WalStreamTarget)
                       and target.term is not None)
    pay: Payer | None = None
    if recovery_stream:
        assert throttles is not None
        if not throttles.sender_slot_free() and not _at_risk(timeline, config,
                                                              listening_since):
            throttles.refused_senders += 1
            await _reject(
                request, 503,
                f"donor busy: {throttles.active_senders} recovery streams running, at most "
                f"{throttles.max_senders} (--recovery-max-senders); try another donor",
                remote, reason="donor_busy")
            return
        pay = serve_payer(timeline, throttles, config.heartbeat_timeout, listening_since)
        throttles.active_senders += 1
    try:
        try:
            ws = await request.accept()
        except ConnectionClosed:
            return
        except Exception:
            log.exception("WAL port: accepting %s failed", remote)
            return
        code, reason = await _run_connection(ws, timeline, target, remote, config, senders,
                                             pay)
        with trio.move_on_after(config.close_timeout):
            await _close(ws, code, reason, remote)
    finally:
        if recovery_stream:
            assert throttles is not None
            throttles.active_senders -= 1


def _at_risk(timeline: Timeline, config: WalServerConfig, listening_since: float) -> bool:
    return quorum_at_risk_here(timeline, config.heartbeat_timeout, listening_since)


async def _run_connection(
    ws: WebSocketConnection,
    timeline: Timeline,
    target: WalPushTarget | WalStreamTarget,
    remote: str,
    config: WalServerConfig,
    senders: WalSenders,
    pay: Payer | None = None,
) -> tuple[int, str]:
    """Serve an accepted connection; return the close code and reason it ends with."""
    try:
        async with timeline.attach():
            match target:
                case WalPushTarget():
                    kind: Literal["proposer", "recovery"] = (
                        "recovery" if target.recovery else "proposer"
                    )
                    async with timeline.receiver(kind, remote) as receiver:
                        await serve_push_connection(
                            ws, timeline, receiver, flush_interval=config.flush_interval,
                            idle_timeout=config.idle_timeout,
                        )
                case WalStreamTarget():
                    await serve_stream_connection(
                        ws, timeline, target.start_lsn, target.term, remote=remote,
                        senders=senders, keepalive_interval=config.keepalive_interval,
                        send_timeout=config.idle_timeout, archive=config.archive, pay=pay,
                    )
    except Exception as e:  # mapped to a close code: nothing escapes a handler
        if timeline.deleted:
            return CLOSE_TIMELINE_DELETED, "timeline deleted"
        return _close_code_for(e, remote)
    if timeline.deleted:
        return CLOSE_TIMELINE_DELETED, "timeline deleted"
    return CLOSE_NORMAL, ""


def _close_code_for(error: Exception, remote: str) -> tuple[int, str]:
    match error:
        case StreamStopped():
            log.info("WAL stream to %s ended: %s", remote, error)
            return error.close_code or CLOSE_INTERNAL_ERROR, str(error)
        case RemoteProtocolError():
            log.info("WAL port: protocol error from %s: %s", remote, error)
            return error.close_code or CLOSE_INTERNAL_ERROR, str(error)
        case ProposerArrived():
            log.info("WAL port: recovery push from %s yields: %s", remote, error)
            return CLOSE_PROPOSER_ARRIVED, str(error)
        case DiskUsageExceeded():
            log.info("WAL push from %s refused: %s", remote, error)
            return error.close_code or CLOSE_INTERNAL_ERROR, str(error)
        case AcceptorError():
            log.info("WAL push from %s refused: %s", remote, error)
            return CLOSE_ACCEPTOR_REFUSED, str(error)
        case TimelineBroken():
            log.warning("WAL port: %s: %s", remote, error)
            return CLOSE_INTERNAL_ERROR, f"timeline stopped: {error.reason}"
    log.error("WAL port: connection from %s failed", remote, exc_info=error)
    return CLOSE_INTERNAL_ERROR, f"internal error: {type(error).__name__}: {error}"


def _peer_only(target: WalPushTarget | WalStreamTarget) -> str | None:
    """The recovery endpoints, which a tenant (proposer) token must not open: a stream with
    a term serves uncommitted WAL, and a recovery push is never counted as a proposer."""
    if isinstance(target, WalStreamTarget) and target.term is not None:
        return "wal_stream with a term (the recovery stream)"
    if isinstance(target, WalPushTarget) and target.recovery:
        return "wal_push?recovery=true"
    return None


def _bearer(request: WebSocketRequest) -> str | None:
    for name, value in request.headers:
        if name.lower() == b"authorization":
            return bearer_token(value.decode("latin-1"))
    return None


async def _reject(request: WebSocketRequest, status: int, message: str, remote: str,
                  *, reason: str | None = None) -> None:
    log.info("WAL port: rejected %s with %d: %s", remote, status, message)
    doc = {"error": message} if reason is None else {"error": message, "reason": reason}
    body = json.dumps(doc).encode()
    try:
        await request.reject(
            status, extra_headers=[(b"content-type", b"application/json")], body=body
        )
    except ConnectionClosed:
        pass  # the client is already gone
    except Exception:
        log.exception("WAL port: rejecting %s failed", remote)


async def _close(ws: WebSocketConnection, code: int, reason: str, remote: str) -> None:
    try:
        await ws.aclose(code, truncate_close_reason(reason) or None)
    except Exception:
        log.exception("WAL port: closing the connection to %s failed", remote)

