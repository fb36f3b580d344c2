"""The PostgreSQL replication port (``--listen-pg``): a protocol v3 server for physical
replication clients (a standby's walreceiver, ``pg_receivewal``).

Theory of operation
-------------------
Each TCP connection takes a slot of the node-wide connection cap, then runs
:func:`_serve_connection`: the startup packet (TLS and GSS encryption are refused with
``N``, as a server without them does), the startup parameters (``pgproto`` rules Q1, Q2:
physical replication, the timeline from ``-c tenant_id=… -c timeline_id=…``),
authentication, then commands until the client leaves. ``START_REPLICATION`` streams the
timeline's committed WAL (``_pg_stream``).

Rules
-----
G1  Auth off: trust. Auth on: the server asks for a cleartext password, which must be a
    JWT valid for the timeline's tenant (the tenant or the ``safekeeperdata`` scope), as
    Neon's safekeepers take it. A missing or invalid token is FATAL 28P01, a token for
    another tenant FATAL 28000. Authentication comes before the timeline is looked up, so
    an unauthenticated client learns nothing of which timelines exist.
G2  An unknown timeline is FATAL 3D000, like a database that does not exist.
G3  A client must finish its startup (and authentication) within ``startup_timeout``
    seconds, and send its next command within ``idle_timeout`` seconds (FATAL 57P05);
    while streaming, it must send something (status updates; keepalives ask for one every
    ``keepalive_interval``) within ``idle_timeout`` and take what is sent within
    ``idle_timeout``, else the connection is closed.
G4  Beyond the connection cap a client gets FATAL 53300 (``too many connections``) after
    its startup packet, and is closed; the node goes on. EMFILE while accepting is
    trio's ``serve_listeners``' business: it waits and retries.
G5  A command that fails gets ERROR with its SQLSTATE and ReadyForQuery: the connection
    goes on. Framing errors and startup refusals are FATAL and close the connection.
    Nothing a client sends ever escapes its connection's handler.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import secrets
from typing import Final, NoReturn, final

import attrs
import trio

from ..core import AuthError, TenantId, TenantTimelineId, TimelineId
from ..pgproto import (
    ADMIN_SHUTDOWN,
    FEATURE_NOT_SUPPORTED,
    IDLE_SESSION_TIMEOUT,
    INTERNAL_ERROR,
    INVALID_AUTHORIZATION,
    INVALID_CATALOG_NAME,
    INVALID_PASSWORD,
    PROTOCOL_3_0,
    PROTOCOL_VIOLATION,
    TOO_MANY_CONNECTIONS,
    CancelRequest,
    CopyData,
    CopyDone,
    CopyFail,
    GssEncRequest,
    PasswordMessage,
    PgError,
    Query,
    ReplicationStartup,
    SslRequest,
    StartupMessage,
    Terminate,
    UnknownMessage,
    encode_auth_cleartext,
    encode_auth_ok,
    encode_backend_key_data,
    encode_error,
    encode_negotiate_protocol_version,
    encode_parameter_status,
    encode_ready_for_query,
    parse_startup,
)
from ..timeline import Timeline, TimelineNotFound, TimelineRegistry
from ._auth import Authenticator
from ._connections import ConnectionSlots
from ._pg_connection import ClientGone, ClientStuck, PgConnection
from ._pg_stream import PgStreamObserver, run_command, server_version_string

__all__ = ["PgServerConfig", "serve_pg"]

log = logging.getLogger(__name__)

_EXTENDED_QUERY: Final = frozenset(b"PBDEHC")
_connection_ids = itertools.count(1)


@final
@attrs.frozen
class PgServerConfig:
    """Tunables of the pg port (G3)."""

    keepalive_interval: float = 1.0
    startup_timeout: float = 10.0
    idle_timeout: float = 30.0
    max_message_size: int = 1024 * 1024


async def serve_pg(
    registry: TimelineRegistry,
    authenticator: Authenticator,
    host: str,
    port: int,
    *,
    config: PgServerConfig | None = None,
    slots: ConnectionSlots | None = None,
    observer: PgStreamObserver | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the pg port on ``host:port`` until cancelled (see the module docstring).

    ``port`` 0 picks a free port; ``task_status.started`` reports the bound one. With
    ``slots`` (the node-wide cap shared with the other ports), G4 applies. Never returns
    unless cancelled; a failing connection never affects the others.
    """
    config = config if config is not None else PgServerConfig()
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    handler = functools.partial(_serve_tcp, registry, authenticator, config, slots, observer)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        log.info("PostgreSQL replication port listening on %s:%d", host, bound)
        task_status.started(bound)
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


def _remote(stream: trio.SocketStream) -> str:
    try:
        peer = stream.socket.getpeername()
    except OSError:
        return "?"
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


async def _serve_tcp(
    registry: TimelineRegistry,
    authenticator: Authenticator,
    config: PgServerConfig,
    slots: ConnectionSlots | None,
    observer: PgStreamObserver | None,
    stream: trio.SocketStream,
) -> None:
    remote = _remote(stream)
    conn = PgConnection(stream, remote, max_message=config.max_message_size,
                        send_timeout=config.idle_timeout)
    try:
        if slots is None:
            await _serve_connection(registry, authenticator, config, observer, conn)
            return
        with slots.hold() as admitted:
            if admitted:
                await _serve_connection(registry, authenticator, config, observer, conn)
                return
            await _refuse_full(conn, slots.limit, config)
    except Exception:  # G5: never let one connection take the server down
        log.exception("pg port: connection from %s failed", remote)
    finally:
        await trio.aclose_forcefully(stream)


async def _refuse_full(conn: PgConnection, limit: int, config: PgServerConfig) -> None:
    """G4: read the startup packet (a client that was not heard out may see a reset
    instead of the error), then FATAL 53300."""
    error = PgError(TOO_MANY_CONNECTIONS,
                    f"sorry, too many clients already: this node holds {limit} connections, "
                    "its limit; try again later", fatal=True)
    with trio.move_on_after(min(1.0, config.startup_timeout)):
        try:
            while True:
                msg = await conn.receive()
                if isinstance(msg, SslRequest | GssEncRequest):
                    await conn.send(b"N")
                    continue
                break
        except (ClientGone, ClientStuck, PgError):
            return
    with contextlib.suppress(ClientGone, ClientStuck):
        await conn.send(encode_error(error))


async def _serve_connection(
    registry: TimelineRegistry,
    authenticator: Authenticator,
    config: PgServerConfig,
    observer: PgStreamObserver | None,
    conn: PgConnection,
) -> None:
    """One connection from its first byte to its end; never raises but for bugs."""
    try:
        timeline: Timeline | None = None
        startup: ReplicationStartup | None = None
        with trio.move_on_after(config.startup_timeout):
            timeline, startup = await _startup(registry, authenticator, conn)
        if timeline is None or startup is None:
            raise PgError(PROTOCOL_VIOLATION,
                          f"startup not completed within {config.startup_timeout:g} s",
                          fatal=True)
        log.info("pg port: %s (application_name %r) connected to timeline %s",
                 conn.remote, startup.application_name, timeline.ttid)
        async with timeline.attach():
            await _command_loop(timeline, startup, config, observer, conn)
    except PgError as e:
        await _send_final_error(conn, e)
    except ClientStuck as e:
        log.info("pg port: %s: %s", conn.remote, e)
    except ClientGone:
        pass
    except trio.Cancelled:
        with trio.CancelScope(shield=True), trio.move_on_after(0.5):
            await _send_final_error(conn, PgError(
                ADMIN_SHUTDOWN, "terminating connection: the safekeeper is shutting down "
                "or the timeline was deleted", fatal=True))
        raise
    except Exception as e:
        log.exception("pg port: connection from %s failed", conn.remote)
        await _send_final_error(conn, PgError(
            INTERNAL_ERROR, f"internal error: {type(e).__name__}: {e}", fatal=True))


async def _send_final_error(conn: PgConnection, error: PgError) -> None:
    log.info("pg port: %s: %s %s", conn.remote, error.sqlstate, error.message)
    fatal = error if error.fatal else PgError(error.sqlstate, error.message, fatal=True)
    try:
        with trio.move_on_after(1.0):
            await conn.send(encode_error(fatal))
    except (ClientGone, ClientStuck):
        pass


async def _startup(
    registry: TimelineRegistry, authenticator: Authenticator, conn: PgConnection,
) -> tuple[Timeline, ReplicationStartup]:
    """The startup packet, G1, G2, the server's parameters; raises PgError (fatal)."""
    while True:
        msg = await conn.receive()
        match msg:
            case SslRequest() | GssEncRequest():
                await conn.send(b"N")  # no TLS / GSS encryption (yet): go on in the clear
            case CancelRequest():
                raise ClientGone("a cancel request: nothing here can be cancelled")
            case StartupMessage():
                break
            case _:
                raise PgError(PROTOCOL_VIOLATION, "expected a startup packet", fatal=True)
    conn.parser.startup_done()
    unknown = sorted(k for k in msg.params if k.startswith("_pq_."))
    if msg.version != PROTOCOL_3_0 or unknown:
        await conn.send(encode_negotiate_protocol_version(0, unknown))
    startup = parse_startup(msg.params)
    try:
        ttid = TenantTimelineId(TenantId.parse(startup.tenant_id),
                                TimelineId.parse(startup.timeline_id))
    except ValueError as e:
        raise PgError(INVALID_AUTHORIZATION, f"bad tenant_id or timeline_id in the startup "
                      f"options: {e}", fatal=True) from None
    if authenticator.enabled:
        await conn.send(encode_auth_cleartext())
        reply = await conn.receive()
        if not isinstance(reply, PasswordMessage):
            raise PgError(PROTOCOL_VIOLATION, "expected a password message", fatal=True)
        token = reply.password.decode("utf-8", errors="replace").strip() or None
        try:
            authenticator.check(token, tenant_id=ttid.tenant_id)
        except AuthError as e:
            code = INVALID_PASSWORD if e.status == 401 else INVALID_AUTHORIZATION
            raise PgError(code, f"authentication failed (the password must be a JWT for "
                          f"tenant {ttid.tenant_id}): {e}", fatal=True) from None
    try:
        timeline = registry.get(ttid)
    except TimelineNotFound:
        raise PgError(INVALID_CATALOG_NAME,
                      f"timeline {ttid} does not exist on this safekeeper", fatal=True) from None
    snap = timeline.snapshot()
    await conn.send(
        encode_auth_ok()
        + b"".join(encode_parameter_status(k, v) for k, v in (
            ("server_version", server_version_string(snap.pg_version)),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("TimeZone", "UTC"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("application_name", startup.application_name),
        ))
        + encode_backend_key_data(os.getpid() & 0x7FFFFFFF, secrets.randbits(31))
        + encode_ready_for_query()
    )
    return timeline, startup


async def _command_loop(
    timeline: Timeline,
    startup: ReplicationStartup,
    config: PgServerConfig,
    observer: PgStreamObserver | None,
    conn: PgConnection,
) -> None:
    """Commands until Terminate or end of file (G3, G5)."""
    skipping_to_sync = False
    while True:
        msg = None
        with trio.move_on_after(config.idle_timeout):
            msg = await conn.receive()
        if msg is None:
            raise PgError(IDLE_SESSION_TIMEOUT,
                          f"terminating connection due to idle timeout: no command for "
                          f"{config.idle_timeout:g} s", fatal=True)
        match msg:
            case Terminate():
                return
            case Query(text=text):
                try:
                    await run_command(timeline, startup, text, conn,
                                      keepalive_interval=config.keepalive_interval,
                                      idle_timeout=config.idle_timeout, observer=observer)
                except PgError as e:
                    if e.fatal:
                        raise
                    log.info("pg port: %s: %s: %s %s", conn.remote, text[:100], e.sqlstate,
                             e.message)
                    await conn.send(encode_error(e))
                await conn.send(encode_ready_for_query())
            case UnknownMessage(type=b"S"):  # Sync: the end of an extended-query batch
                skipping_to_sync = False
                await conn.send(encode_ready_for_query())
            case UnknownMessage(type=kind) if kind[0] in _EXTENDED_QUERY:
                if not skipping_to_sync:
                    skipping_to_sync = True
                    await conn.send(encode_error(PgError(
                        FEATURE_NOT_SUPPORTED, "the extended query protocol is not supported "
                        "on a replication connection: use simple queries")))
            case CopyData() | CopyDone() | CopyFail():
                pass  # a late copy message after a stream ended: PostgreSQL ignores it too
            case _:
                raise PgError(PROTOCOL_VIOLATION,
                              f"unexpected message {type(msg).__name__}", fatal=True)
