"""Serve an ASGI app with hypercorn's trio worker."""

from __future__ import annotations

import logging
from typing import cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework
from starlette.types import ASGIApp

__all__ = ["serve_http"]

log = logging.getLogger(__name__)


def _port_of(bind: str) -> int:
    # hypercorn reports each listener as "http://<host>:<port>" ("[::1]:<port>" for IPv6).
    return int(bind.rsplit(":", 1)[1])


async def serve_http(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    keep_alive_timeout: float = 5.0,
    graceful_timeout: float = 1.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` (HTTP/1.1, no TLS) until cancelled; never returns.

    ``task_status.started(port)`` reports the port actually bound, so ``port=0`` gives an
    ephemeral one: hypercorn binds the socket itself and reports the bound address, which
    is read back here. Cancellation closes the listener and the open connections (hypercorn
    gives requests in flight at most ``graceful_timeout`` seconds, but an outer cancel
    scope ends them at once). Raises ``OSError`` if the address cannot be bound.
    """
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.keep_alive_timeout = keep_alive_timeout
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    async with trio.open_nursery() as nursery:
        # Same ASGI protocol; hypercorn's event types are just stricter than Starlette's.
        framework = cast(ASGIFramework, app)
        binds: list[str] = await nursery.start(serve, framework, config)
        bound = _port_of(binds[0])
        log.info("HTTP API listening on %s", binds[0])
        task_status.started(bound)
