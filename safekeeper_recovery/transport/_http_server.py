"""Serve an ASGI app with hypercorn's trio connection handler, behind our own listeners.

hypercorn's ``serve`` accepts connections itself; here the listener loop is ours (still
``trio.serve_listeners``) and each accepted stream is handed to hypercorn's per-connection
``TCPServer``, so that the node-wide connection cap (:class:`ConnectionSlots`) applies to
the HTTP port as it does to the WAL port. hypercorn's lifespan protocol is not run: the
app has no startup or shutdown handlers.
"""

from __future__ import annotations

import logging
from typing import cast

import trio
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ASGIFramework, ConnectionState
from hypercorn.utils import wrap_app
from starlette.types import ASGIApp

from ._connections import ConnectionSlots

__all__ = ["serve_http"]

log = logging.getLogger(__name__)


async def serve_http(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    keep_alive_timeout: float = 5.0,
    graceful_timeout: float = 1.0,
    slots: ConnectionSlots | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` (HTTP/1.1, no TLS) until cancelled; never returns.

    ``task_status.started(port)`` reports the port actually bound, so ``port=0`` gives an
    ephemeral one. Cancellation closes the listener and the open connections at once. An
    idle keep-alive connection is closed after ``keep_alive_timeout`` seconds. With
    ``slots`` (the node-wide connection cap), a connection beyond the cap gets 503 and is
    closed. Raises ``OSError`` if the address cannot be bound.
    """
    config = Config()
    config.keep_alive_timeout = keep_alive_timeout
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    # Same ASGI protocol; hypercorn's event types are just stricter than Starlette's.
    wrapped = wrap_app(cast(ASGIFramework, app), config.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)

    async def serve_one(stream: trio.SocketStream) -> None:
        # hypercorn annotates an SSL stream but takes a plain one alike (it checks).
        tls = cast(trio.SSLStream[trio.SocketStream], stream)
        await TCPServer(wrapped, config, context, ConnectionState({}), tls)

    async def handle(stream: trio.SocketStream) -> None:
        await (serve_one(stream) if slots is None else slots.serve(stream, serve_one))

    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        log.info("HTTP API listening on %s:%d", host, bound)
        task_status.started(bound)
