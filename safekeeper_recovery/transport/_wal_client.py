"""Clients of the WAL port: push WAL as a proposer (or recovery), or stream WAL out.

::

    async with open_wal_push(url, tenant, timeline, token=t) as conn:
        await conn.send(Greeting(tenant, timeline))
        reply = await conn.receive()          # AcceptorMessage

    async with open_wal_stream(url, tenant, timeline, Lsn(...), term=5) as stream:
        msg = await stream.receive()          # WalData | Keepalive
        await stream.send_status(StatusUpdate(...))

Errors: a refused or failed handshake raises :class:`WalConnectError` (with the HTTP
``status`` and ``body`` of a refusal); the server closing the connection raises
:class:`WalPushClosed` / :class:`WalStreamClosed` carrying its close ``code`` and
``reason``; a malformed message raises ``RemoteProtocolError``. Callers add their own
timeouts around ``receive`` (``trio.fail_after``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, final
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)

from ..core import (
    MAX_MESSAGE_SIZE,
    AcceptorMessage,
    ArchivedWalUnreadable,
    Lsn,
    ProposerMessage,
    RemoteProtocolError,
    SafekeeperError,
    StatusUpdate,
    StreamSenderMessage,
    StreamTermChanged,
    TenantId,
    Term,
    TimelineId,
    WalRemoved,
    decode_acceptor_message,
    decode_stream_sender_message,
    encode,
    leaves,
)

__all__ = [
    "WalConnectError",
    "WalConnectionClosed",
    "WalPushClosed",
    "WalPushConnection",
    "WalStreamClosed",
    "WalStreamConnection",
    "open_wal_push",
    "open_wal_stream",
    "wal_push_url",
    "wal_stream_url",
]

RECEIVE_BUFFER_SIZE: Final = 1024 * 1024
"""trio-websocket's read size: fewer, larger reads mean fewer wsproto parsing rounds and
fewer WAL messages (up to 1 MiB) split across two reads (each split costs a join copy)."""
MESSAGE_QUEUE_SIZE: Final = 4
"""Messages trio-websocket may decode ahead of the reader (its default, 1, makes its reader
task and ours alternate message by message)."""
CLOSE_TIMEOUT: Final = 5.0
_ABNORMAL_CLOSURE: Final = 1006


_PERMANENT_HTTP_STATUSES: Final = frozenset({400, 401, 403, 404})
_PERMANENT_CLOSE_CODES: Final = frozenset({1008, 4004})


class WalConnectError(SafekeeperError):
    """The WAL connection could not be opened.

    ``status`` and ``body`` are the HTTP status and body of a refused handshake (400 bad
    request, 401/403 auth, 404 unknown timeline), ``None`` for network errors and timeouts.
    """

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = body
        # Bad request, auth, unknown timeline: asking again gets the same answer.
        self.permanent = status in _PERMANENT_HTTP_STATUSES


class WalConnectionClosed(SafekeeperError):
    """The connection ended; ``code``/``reason`` are the server's close frame (1006: none)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"WAL connection closed with code {code}: {reason or '(no reason)'}")
        self.code = code
        self.close_code = code
        self.reason = reason
        # Policy violation (auth) and a deleted timeline: reconnecting cannot mend them.
        self.permanent = code in _PERMANENT_CLOSE_CODES


class WalPushClosed(WalConnectionClosed):
    """The server closed a ``wal_push`` connection (4009: the acceptor refused a message)."""

    @property
    def proposer_arrived(self) -> bool:
        """A recovery push ended because a proposer connected to the timeline (4010)."""
        return self.code == 4010


class WalStreamClosed(WalConnectionClosed):
    """The server closed a ``wal_stream`` connection."""

    @property
    def term_changed(self) -> bool:
        """The donor's term moved (close code 4000, ``StreamTermChanged`` on its side)."""
        return self.code == StreamTermChanged.close_code

    @property
    def wal_removed(self) -> bool:
        """The WAL asked for is no longer on the donor (close code 4001, ``WalRemoved``)."""
        return self.code == WalRemoved.close_code

    @property
    def archive_unreadable(self) -> bool:
        """The WAL asked for was removed from the donor and its archive copy is missing or
        damaged, or the archive did not answer (close code 4011, ``ArchivedWalUnreadable``)."""
        return self.code == ArchivedWalUnreadable.close_code


def _base(url: str) -> str:
    url = url.rstrip("/")
    return url if "://" in url else f"ws://{url}"


def wal_push_url(
    url: str, tenant: TenantId, timeline: TimelineId, *, recovery: bool = False
) -> str:
    """The ``wal_push`` URL under the WAL-port base ``url`` (``ws://host:port``, ``host:port``)."""
    query = "?recovery=true" if recovery else ""
    return f"{_base(url)}/v1/tenant/{tenant}/timeline/{timeline}/wal_push{query}"


def wal_stream_url(
    url: str, tenant: TenantId, timeline: TimelineId, start_lsn: Lsn, *, term: Term | None = None
) -> str:
    """The ``wal_stream`` URL under the WAL-port base ``url``."""
    query = f"?start_lsn={start_lsn}" + (f"&term={term}" if term is not None else "")
    return f"{_base(url)}/v1/tenant/{tenant}/timeline/{timeline}/wal_stream{query}"


def _close_details(e: ConnectionClosed) -> tuple[int, str]:
    if e.reason is None:
        return _ABNORMAL_CLOSURE, ""
    return e.reason.code, e.reason.reason or ""


def _binary(raw: str | bytes) -> bytes:
    if isinstance(raw, str):
        raise RemoteProtocolError("expected a binary WebSocket message, got text")
    return raw


@final
class WalPushConnection:
    """A ``wal_push`` connection: send proposer messages, receive acceptor replies."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws

    async def send(self, msg: ProposerMessage) -> None:
        """Send one message; raises :class:`WalPushClosed` if the server has closed."""
        try:
            await self._ws.send_message(encode(msg))
        except ConnectionClosed as e:
            raise WalPushClosed(*_close_details(e)) from None

    async def receive(self) -> AcceptorMessage:
        """The next reply; raises :class:`WalPushClosed` once the server has closed."""
        try:
            raw = await self._ws.get_message()
        except ConnectionClosed as e:
            raise WalPushClosed(*_close_details(e)) from None
        return decode_acceptor_message(_binary(raw))

    async def aclose(self) -> None:
        """Close normally (1000). Idempotent."""
        await self._ws.aclose()


@final
class WalStreamConnection:
    """A ``wal_stream`` connection: receive WAL and keepalives, report progress."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws

    async def receive(self) -> StreamSenderMessage:
        """The next WalData or Keepalive; raises :class:`WalStreamClosed` at the end."""
        try:
            raw = await self._ws.get_message()
        except ConnectionClosed as e:
            raise WalStreamClosed(*_close_details(e)) from None
        return decode_stream_sender_message(_binary(raw))

    async def send_status(self, status: StatusUpdate) -> None:
        try:
            await self._ws.send_message(encode(status))
        except ConnectionClosed as e:
            raise WalStreamClosed(*_close_details(e)) from None

    async def aclose(self) -> None:
        await self._ws.aclose()


@asynccontextmanager
async def _open(
    url: str, token: str | None, connect_timeout: float
) -> AsyncIterator[WebSocketConnection]:
    """A client WebSocket on a TCP stream we own.

    Not ``open_websocket_url``: trio-websocket 0.12 leaks the client socket when the
    handshake is rejected or when the server closes first. Here the stream is always
    closed on the way out, and the reader task's errors come out unwrapped.
    """
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise WalConnectError(f"unsupported WAL URL {url!r}: expected ws://host:port/...")
    host, port = parts.hostname, parts.port or 80
    resource = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = [(b"authorization", f"Bearer {token}".encode())] if token is not None else []
    try:
        with trio.fail_after(connect_timeout):
            stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise WalConnectError(
            f"could not connect to {url}: no connection within {connect_timeout} s"
        ) from None
    except OSError as e:
        raise WalConnectError(f"could not connect to {url}: {e}") from e
    async with stream:
        try:
            async with trio.open_nursery(strict_exception_groups=True) as nursery:
                try:
                    with trio.fail_after(connect_timeout):
                        ws = await wrap_client_stream(
                            nursery,
                            stream,
                            f"{host}:{port}",
                            resource,
                            extra_headers=headers,
                            max_message_size=MAX_MESSAGE_SIZE,
                            receive_buffer_size=RECEIVE_BUFFER_SIZE,
                            message_queue_size=MESSAGE_QUEUE_SIZE,
                        )
                except trio.TooSlowError:
                    raise WalConnectError(
                        f"{url}: no WebSocket handshake within {connect_timeout} s"
                    ) from None
                try:
                    yield ws
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                        await ws.aclose()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise _unwrap(group, url) from None


def _unwrap(group: BaseExceptionGroup[BaseException], url: str) -> BaseException:
    """The one meaningful exception of the connection nursery."""
    rejected, rest = group.split(ConnectionRejected)
    if rejected is not None:
        e = rejected.exceptions[0]
        assert isinstance(e, ConnectionRejected)
        body = (e.body or b"").decode("utf-8", errors="replace")
        return WalConnectError(
            f"{url} refused the WebSocket handshake with HTTP {e.status_code}: {body}",
            status=e.status_code,
            body=body,
        )
    if rest is None:  # pragma: no cover - split() always leaves something here
        return group
    errors = leaves(rest)
    meaningful = [e for e in errors if not isinstance(e, trio.Cancelled)]
    if len(meaningful) == 1:
        return meaningful[0]
    if not meaningful:
        return errors[0]
    return group


@asynccontextmanager
async def open_wal_push(
    url: str,
    tenant: TenantId,
    timeline: TimelineId,
    *,
    token: str | None = None,
    recovery: bool = False,
    connect_timeout: float = 10.0,
) -> AsyncIterator[WalPushConnection]:
    """Open a ``wal_push`` connection to the WAL port at ``url``; close it on exit.

    ``recovery=True`` marks the connection as peer recovery (never counted as a streaming
    proposer). The first message must be a Greeting. Raises :class:`WalConnectError`.
    """
    target = wal_push_url(url, tenant, timeline, recovery=recovery)
    async with _open(target, token, connect_timeout) as ws:
        yield WalPushConnection(ws)


@asynccontextmanager
async def open_wal_stream(
    url: str,
    tenant: TenantId,
    timeline: TimelineId,
    start_lsn: Lsn,
    *,
    term: Term | None = None,
    token: str | None = None,
    connect_timeout: float = 10.0,
) -> AsyncIterator[WalStreamConnection]:
    """Open a ``wal_stream`` from ``start_lsn``; with ``term``, stream up to the donor's
    flush_lsn while its term stays ``term``, else up to its commit_lsn. Raises
    :class:`WalConnectError`; the stream's end raises :class:`WalStreamClosed`."""
    target = wal_stream_url(url, tenant, timeline, start_lsn, term=term)
    async with _open(target, token, connect_timeout) as ws:
        yield WalStreamConnection(ws)
