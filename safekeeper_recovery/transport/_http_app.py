"""The HTTP API of a node: a Starlette app over the node's :class:`NodeContext`.

Endpoints (all answers are JSON except ``/metrics``; errors are ``{"error": "…"}``):

====== ========================================================= ======================
GET    /healthz                                                  open
GET    /metrics                                                  open (Prometheus text)
GET    /v1/openapi.json                                          open (this API, OpenAPI 3.1)
GET    /v1/status                                                node-wide
GET    /v1/timelines                                             node-wide
POST   /v1/peer_info                                             node-wide
GET    /v1/recovery                                              node-wide
GET    /v1/recovery/throttles                                    node-wide
PATCH  /v1/recovery/throttles                                    node-wide
POST   /v1/tenant/{tenant_id}/timeline                           tenant
GET    /v1/tenant/{tenant_id}/timeline/{timeline_id}             tenant
DELETE /v1/tenant/{tenant_id}/timeline/{timeline_id}             tenant
GET    /v1/tenant/{tenant_id}/timeline/{timeline_id}/digest      tenant
POST   /v1/tenant/{tenant_id}/timeline/{timeline_id}/term_bump   tenant
POST   /v1/tenant/{tenant_id}/timeline/{timeline_id}/recovery/trigger   tenant
POST   /v1/tenant/{tenant_id}/timeline/{timeline_id}/recovery/cancel    tenant
POST   /v1/tenant/{tenant_id}/timeline/{timeline_id}/pull        node-wide (docs/pull.md)
GET    /v1/tenant/{tenant_id}/timeline/{timeline_id}/pull        node-wide
GET    /v1/tenant/{tenant_id}/timeline/{timeline_id}/snapshot    node-wide (binary stream)
====== ========================================================= ======================

Status codes: 400 bad id / LSN / body, 401 missing or invalid token, 403 token scope does
not cover the request, 404 unknown timeline or route, 405 wrong method, 408 a body that
did not arrive within ``NodeContext.body_timeout`` (30 s), 409 conflicting create (or a
digest whose range moved under it, or a term bump the acceptor refuses: rule R10, more
than 2^32 at once or past 2^64-1), 413 a body over its endpoint's limit (peer info:
``NodeContext.max_body_size``, 8 MiB; the others 16 KiB), 503 broken timeline or a
storage failure (e.g. a create on a full disk: ``{"error": "disk full: …"}``), 500
anything unexpected (logged).

With auth on, "node-wide" needs scope ``safekeeperdata`` and "tenant" needs
``safekeeperdata`` or a ``tenant`` token for the tenant in the path. An unauthenticated
request gets 401 before any validation, so ids are never probed without a token.

A timeline that failed to load (``registry.broken``) answers its status with **503**
``{"error": "timeline broken: <reason>", "broken": "<reason>", "tenant_id", "timeline_id"}``;
one that stopped at run time (``timeline.broken``) answers 200 with its full status and a
non-null ``broken``. Both are counted and listed as ``broken`` in ``/v1/status`` and
``/v1/timelines``.

Every handler turns its errors into a JSON answer, so no request can take the server down;
``trio.Cancelled`` (a ``BaseException``) is never caught.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from importlib.resources import files
from typing import Final, NoReturn, Protocol, TypeVar

import attrs
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..core import (
    AcceptorError,
    AuthError,
    Lsn,
    NodeId,
    PullError,
    PullInProgress,
    StorageError,
    TenantId,
    TenantTimelineId,
    TimelineId,
)
from ..recovery import RecoveryStatus, RecoveryThrottles
from ..timeline import (
    DiskGuard,
    Timeline,
    TimelineBroken,
    TimelineConflict,
    TimelineNotFound,
    TimelineRegistry,
    describe_storage_failure,
    snapshot_frames,
)
from ._auth import Authenticator, bearer_token
from ._json import (
    decode_create_timeline,
    decode_peer_info_batch,
    encode_changes,
    timeline_status_json,
)
from ._metrics import METRICS_CONTENT_TYPE, NodeMetrics
from ._peer_exchange import apply_peer_info_batch
from ._pull import PullService
from ._serve_throttle import Payer, serve_payer
from ._wal_sender import WalSenders

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "NodeContext",
    "RecoveryAdmin",
    "build_http_app",
    "openapi_document",
]

log = logging.getLogger(__name__)


@functools.cache
def openapi_document() -> bytes:
    """The OpenAPI document of this app (``transport/openapi.json``, served as it is; read
    on first use, not on import)."""
    return (files(__package__) / "openapi.json").read_bytes()

DEFAULT_MAX_BODY_SIZE: Final = 8 * 1024 * 1024
"""The largest body of any endpoint: ``POST /v1/peer_info``. Measured: a full batch of
10,000 timelines with every value at its longest (terms 2^64-1, LSNs FFFFFFFF/FFFFFFFF,
1 KiB addresses) is 4,022,266 bytes as our client sends it; 8 MiB leaves room for about
20,000."""
SMALL_BODY_SIZE: Final = 16 * 1024
"""Limit of the other bodies (timeline create, term bump: a few hundred bytes at most)."""
INLINE_PARSE_SIZE: Final = 64 * 1024
"""Bodies above this are parsed (and decoded) in a worker thread, never on the event loop:
decoding the 10,000-timeline batch takes about 0.25 s of CPU."""
MAX_JSON_CONTAINERS_PER_KIB: Final = 16
"""A body may hold at most this many ``{``/``[`` per KiB before it is parsed: a batch
entry is ~400 bytes and one object, while ``[{},{},…]`` is a container per 3 bytes and
parses into ~70 bytes of Python objects per byte (16 MiB of it took 500 MiB)."""
DEFAULT_BODY_TIMEOUT: Final = 30.0
"""A request body must arrive completely within this many seconds (then 408)."""
MAX_LONG_POLL: Final = 300.0
"""Longest wait (seconds) a change-feed request may ask for."""


class RecoveryAdmin(Protocol):
    """What the recovery engine offers the HTTP API (all non-blocking).

    ``trigger`` / ``cancel`` may raise ``TimelineNotFound`` (answered with 404).
    """

    def snapshot_all(self) -> list[dict[str, object]]: ...

    def progress(self) -> dict[str, object]: ...

    def trigger(self, ttid: TenantTimelineId) -> None: ...

    def cancel(self, ttid: TenantTimelineId) -> None: ...


def _package_version() -> str:
    from .. import __version__  # the root package imports this layer's siblings only lazily

    return __version__


@attrs.define
class NodeContext:
    """Everything the HTTP API needs from its node.

    Mutable on purpose: the node may fill ``http_addr`` / ``wal_addr`` once its listeners
    have bound (port 0), and attach ``recovery`` once the engine runs.

    The timeline status reads three registries owned by the node's wiring, all keyed by
    timeline id: ``walsenders`` (filled by the WAL port), ``recovery_statuses`` (filled
    by the node's recovery service) and ``lifecycle_statuses`` (by its WAL lifecycle
    service).
    """

    registry: TimelineRegistry
    node_id: NodeId
    http_addr: str = ""
    """Base URL of this node's HTTP API, e.g. ``http://127.0.0.1:7676``."""
    wal_addr: str = ""
    """Base URL of this node's WAL port, e.g. ``ws://127.0.0.1:5454``."""
    authenticator: Authenticator = attrs.field(factory=lambda: Authenticator(None))
    metrics: NodeMetrics = attrs.field(factory=NodeMetrics)
    recovery: RecoveryAdmin | None = None
    recovery_statuses: Mapping[TenantTimelineId, RecoveryStatus] = attrs.field(factory=dict)
    """Each timeline's recovery status; one absent shows ``{"state": "disabled"}``."""
    lifecycle_statuses: Mapping[TenantTimelineId, Callable[[], dict[str, object]]] = (
        attrs.field(factory=dict))
    """Each timeline's WAL lifecycle status (archive, removal); one absent shows none."""
    walsenders: WalSenders = attrs.field(factory=WalSenders)
    """The ``wal_stream`` connections running on this node's WAL port."""
    pulls: PullService | None = None
    """Timeline pulls (``POST …/pull``); ``None``: the node pulls nothing (404)."""
    disk_guard: DiskGuard | None = None
    """The node's disk guard: ``/v1/status`` shows its ``disk`` object."""
    heartbeat_timeout: float = 5.0
    """A peer is listed in ``peers`` while its last info is younger than this (seconds)."""
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    """Limit of the peer-info body; the other endpoints take at most ``SMALL_BODY_SIZE``
    (or this, if smaller)."""
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    """Seconds a request body may take to arrive in full (a slow body gets 408)."""
    version: str = attrs.field(factory=_package_version)
    parse_limiter: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(2))
    """Worker threads parsing large bodies at once (bounds their CPU and memory)."""
    throttles: RecoveryThrottles | None = None
    """The node's recovery throttles (``/v1/recovery/throttles``); ``None``: not served.
    Snapshots (``GET …/snapshot``) pay their ``serve`` rate (``_serve_throttle`` S1)."""
    listening_since: float = -float("inf")
    """When the node started listening (trio clock): a timeline's quorum counts as at risk
    only a heartbeat timeout later (core rule T7). The default: settled at once."""


class _Problem(Exception):
    """An answer other than success, raised from a handler."""

    def __init__(self, status: int, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


MAX_ERROR_CHARS: Final = 1024
"""Error messages are cut to this length: they may quote untrusted input of any size."""


def _error(status: int, message: str, *, headers: dict[str, str] | None = None,
           extra: dict[str, object] | None = None) -> JSONResponse:
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return JSONResponse({"error": message, **(extra or {})}, status_code=status,
                        headers=headers)


Handler = Callable[[Request], Awaitable[Response]]


def _json_errors(handler: Handler) -> Handler:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except _Problem as e:
            return _error(e.status, e.message, extra=e.extra)
        except AuthError as e:
            headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
            return _error(e.status, str(e), headers=headers)
        except TimelineNotFound as e:
            return _error(404, str(e))
        except TimelineConflict as e:
            return _error(409, str(e))
        except AcceptorError as e:  # a refusal (e.g. R10: a term bump past the u64 range)
            return _error(409, str(e))
        except TimelineBroken as e:
            return _error(503, str(e))
        except PullInProgress as e:
            return _error(409, str(e), extra={"code": "pull_in_progress"})
        except PullError as e:
            return _error(400, str(e), extra={"code": f"pull_{e.outcome}"})
        except StorageError as e:
            log.error("%s %s: %s", request.method, request.url.path, e)
            return _error(503, describe_storage_failure(e))
        except ClientDisconnect:
            # Expected (a peer killed mid-push, a client that gave up): one line, no
            # traceback. Nobody is left to read an answer; this one just ends the request.
            log.info("%s %s: the client disconnected before sending its whole request",
                     request.method, request.url.path)
            return Response(status_code=400)
        except Exception as e:  # Cancelled is a BaseException and passes through
            log.exception("%s %s failed", request.method, request.url.path)
            return _error(500, f"internal error: {type(e).__name__}: {e}")

    return endpoint


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


_T = TypeVar("_T")


def _parse_and_decode(body: bytes, decode: Callable[[object], _T]) -> _T:
    """Pure: JSON text to ``decode``'s result; 400 for anything malformed."""
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise _Problem(400, f"malformed JSON: {e}") from None
    try:
        return decode(value)
    except ValueError as e:
        raise _Problem(400, str(e)) from None


class _Api:
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    # ---- request helpers --------------------------------------------------------------

    def _authorize(self, request: Request, *, tenant: bool) -> TenantId | None:
        """Check the token; return the path's tenant (validated) if ``tenant``."""
        token = bearer_token(request.headers.get("authorization"))
        auth = self.ctx.authenticator
        if not tenant:
            auth.check(token, tenant_id=None)
            return None
        try:
            tenant_id = TenantId.parse(request.path_params["tenant_id"])
        except ValueError as e:
            # Unauthenticated callers learn nothing about ids: 401 comes before 400.
            try:
                auth.check(token, tenant_id=None)
            except AuthError as auth_error:
                if auth_error.status == 401:
                    raise
            raise _Problem(400, str(e)) from None
        auth.check(token, tenant_id=tenant_id)
        return tenant_id

    def _ttid(self, request: Request) -> TenantTimelineId:
        tenant_id = self._authorize(request, tenant=True)
        assert tenant_id is not None
        try:
            timeline_id = TimelineId.parse(request.path_params["timeline_id"])
        except ValueError as e:
            raise _Problem(400, str(e)) from None
        return TenantTimelineId(tenant_id, timeline_id)

    def _timeline(self, ttid: TenantTimelineId) -> Timeline:
        reason = self.ctx.registry.broken.get(ttid)
        if reason is not None:
            raise _Problem(
                503, f"timeline broken: {reason}", broken=reason,
                tenant_id=str(ttid.tenant_id), timeline_id=str(ttid.timeline_id),
            )
        return self.ctx.registry.get(ttid)

    async def _read_body(self, request: Request, limit: int) -> bytes:
        """The whole body: 413 over ``limit`` (from Content-Length before reading, else
        while reading), 408 if it does not arrive within ``body_timeout``."""
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise _Problem(400, "invalid Content-Length")
            if int(declared) > limit:
                raise _Problem(413, f"body larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        timeout = self.ctx.body_timeout
        with trio.move_on_after(timeout) as scope:
            # aclosing: leaving the stream early must finalise it now, not in the GC.
            async with aclosing(request.stream()) as stream:
                async for chunk in stream:
                    size += len(chunk)
                    if size > limit:
                        raise _Problem(413, f"body larger than {limit} bytes")
                    chunks.append(chunk)
        if scope.cancelled_caught:
            log.info("%s %s: body not received within %g s (%d bytes came)",
                     request.method, request.url.path, timeout, size)
            raise _Problem(408, f"request body not received within {timeout:g} s")
        return b"".join(chunks)

    async def _json_body(
        self,
        request: Request,
        decode: Callable[[object], _T],
        *,
        limit: int = SMALL_BODY_SIZE,
        allow_empty: bool = False,
    ) -> _T:
        """Read, parse and ``decode`` a JSON body (a ``ValueError`` of ``decode`` is 400).

        A body over ``INLINE_PARSE_SIZE`` is parsed and decoded in a worker thread (at most
        two at once, node-wide), so the event loop and every timeline keep going.
        """
        body = await self._read_body(request, min(limit, self.ctx.max_body_size))
        if not body.strip():
            if allow_empty:
                return decode({})
            raise _Problem(400, "empty body: expected a JSON object")
        containers = body.count(b"{") + body.count(b"[")
        if containers > max(64, len(body) * MAX_JSON_CONTAINERS_PER_KIB // 1024):
            raise _Problem(400, f"body has too many JSON objects and arrays ({containers}) "
                                "for its size")
        if len(body) <= INLINE_PARSE_SIZE:
            return _parse_and_decode(body, decode)
        return await trio.to_thread.run_sync(
            _parse_and_decode, body, decode, limiter=self.ctx.parse_limiter
        )

    def _query_lsn(self, request: Request, name: str) -> Lsn:
        text = request.query_params.get(name)
        if text is None:
            raise _Problem(400, f"missing query parameter {name}")
        try:
            return Lsn.parse(text)
        except ValueError as e:
            raise _Problem(400, f"{name}: {e}") from None

    def _broken_list(self) -> list[dict[str, str]]:
        reg = self.ctx.registry
        broken = [(ttid, reason) for ttid, reason in reg.broken.items()]
        broken += [(t.ttid, t.broken) for t in reg.timelines.values() if t.broken is not None]
        return [
            {"tenant_id": str(t.tenant_id), "timeline_id": str(t.timeline_id), "broken": r}
            for t, r in sorted(broken)
        ]

    def _status_json(self, timeline: Timeline) -> dict[str, object]:
        recovery: dict[str, object] | None = None
        status = self.ctx.recovery_statuses.get(timeline.ttid)
        if status is not None:
            try:
                recovery = status.to_json()
            except Exception as e:
                log.exception("recovery status of %s failed", timeline.ttid)
                recovery = {"state": "unknown", "error": f"{type(e).__name__}: {e}"}
        lifecycle: dict[str, object] | None = None
        report = self.ctx.lifecycle_statuses.get(timeline.ttid)
        if report is not None:
            try:
                lifecycle = report()
            except Exception as e:
                log.exception("WAL lifecycle status of %s failed", timeline.ttid)
                lifecycle = {"error": f"{type(e).__name__}: {e}"}
        pull = self.ctx.pulls.statuses.get(timeline.ttid) if self.ctx.pulls else None
        return timeline_status_json(
            timeline.snapshot(),
            wal_lifecycle=lifecycle,
            peers=timeline.alive_peers(trio.current_time(), self.ctx.heartbeat_timeout),
            walreceivers=list(timeline.receivers.values()),
            walsenders=self.ctx.walsenders.of(timeline.ttid),
            recovery=recovery,
            pg_consumers=timeline.consumers.all(),
        ) | ({"pull": pull.to_json()} if pull is not None else {})

    # ---- node-wide ----------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def openapi(self, request: Request) -> Response:
        # Open like /healthz: it describes the API and holds no data of the node.
        return Response(openapi_document(), media_type="application/json")

    async def metrics(self, request: Request) -> Response:
        ctx = self.ctx
        ctx.metrics.set_timeline_counts(
            len(ctx.registry.timelines) + len(ctx.registry.broken), len(self._broken_list())
        )
        return Response(ctx.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def status(self, request: Request) -> Response:
        self._authorize(request, tenant=False)
        ctx = self.ctx
        broken = self._broken_list()
        return JSONResponse({
            "node_id": int(ctx.node_id),
            "version": ctx.version,
            "http_addr": ctx.http_addr,
            "wal_addr": ctx.wal_addr,
            "timeline_count": len(ctx.registry.timelines) + len(ctx.registry.broken),
            "broken_count": len(broken),
            "broken_timelines": broken,
            "recovery": None if ctx.recovery is None else ctx.recovery.progress(),
            "disk": None if ctx.disk_guard is None else ctx.disk_guard.to_json(),
        })

    async def list_timelines(self, request: Request) -> Response:
        self._authorize(request, tenant=False)
        reg = self.ctx.registry
        reasons: dict[TenantTimelineId, str | None] = {
            t.ttid: t.broken for t in reg.timelines.values()
        }
        reasons.update(reg.broken)
        return JSONResponse({"timelines": [
            {
                "tenant_id": str(ttid.tenant_id),
                "timeline_id": str(ttid.timeline_id),
                "state": "ok" if reason is None else "broken",
                "broken": reason,
            }
            for ttid, reason in sorted(reasons.items())
        ]})

    async def timeline_changes(self, request: Request) -> Response:
        """Long poll of the change feed: the timelines changed after ``session``/``after``,
        answered at once if there are any, else on the next change or after ``timeout``
        seconds (default 0: at once; at most ``MAX_LONG_POLL``)."""
        self._authorize(request, tenant=False)
        query = request.query_params
        session = query.get("session")
        try:
            after = int(query.get("after", "0"))
            timeout = float(query.get("timeout", "0"))
        except ValueError:
            raise _Problem(400, "after must be an integer, timeout a number of seconds") from None
        if after < 0:
            raise _Problem(400, f"after must not be negative, got {after}")
        if not 0.0 <= timeout <= MAX_LONG_POLL:  # also refuses nan
            raise _Problem(400, f"timeout must be between 0 and {MAX_LONG_POLL:g} seconds")
        changes = await self.ctx.registry.feed.wait_since(session, after, timeout)
        return JSONResponse(encode_changes(changes))

    async def peer_info(self, request: Request) -> Response:
        self._authorize(request, tenant=False)
        batch = await self._json_body(request, decode_peer_info_batch,
                                      limit=self.ctx.max_body_size)
        return JSONResponse(
            await apply_peer_info_batch(self.ctx.registry, batch, trio.current_time())
        )

    # ---- timelines -----------------------------------------------------------------------

    async def create_timeline(self, request: Request) -> Response:
        tenant_id = self._authorize(request, tenant=True)
        assert tenant_id is not None
        timeline_id, params = await self._json_body(request, decode_create_timeline)
        ttid = TenantTimelineId(tenant_id, timeline_id)
        timeline, created = await self.ctx.registry.create(ttid, params)
        return JSONResponse(self._status_json(timeline), status_code=201 if created else 200)

    async def timeline_status(self, request: Request) -> Response:
        return JSONResponse(self._status_json(self._timeline(self._ttid(request))))

    async def delete_timeline(self, request: Request) -> Response:
        ttid = self._ttid(request)
        if not await self.ctx.registry.delete(ttid):
            raise TimelineNotFound(f"timeline {ttid} not found on this node")
        return JSONResponse(
            {"tenant_id": str(ttid.tenant_id), "timeline_id": str(ttid.timeline_id),
             "deleted": True}
        )

    async def digest(self, request: Request) -> Response:
        ttid = self._ttid(request)
        from_lsn = self._query_lsn(request, "from_lsn")
        until_lsn = self._query_lsn(request, "until_lsn")
        timeline = self._timeline(ttid)
        snap = timeline.snapshot()
        if from_lsn > until_lsn:
            raise _Problem(400, f"from_lsn {from_lsn} > until_lsn {until_lsn}")
        if from_lsn < snap.timeline_start_lsn or until_lsn > snap.flush_lsn:
            raise _Problem(
                400, f"range [{from_lsn}, {until_lsn}) is outside the durable WAL "
                     f"[{snap.timeline_start_lsn}, {snap.flush_lsn})",
            )
        if from_lsn < timeline.store.start_lsn:
            raise _Problem(
                409, f"WAL below {timeline.store.start_lsn} was removed from this node "
                     "(the timeline status' wal_lifecycle.removal_horizon); ask from there on",
            )
        try:
            sha = await timeline.digest(from_lsn, until_lsn)
        except StorageError as e:
            # The range was valid a moment ago: WAL moved under us (truncation) or I/O failed.
            raise _Problem(409, f"digest failed: {e}") from None
        return JSONResponse({"sha256": sha})

    async def term_bump(self, request: Request) -> Response:
        ttid = self._ttid(request)
        term = await self._json_body(request, _decode_term_bump, allow_empty=True)
        timeline = self._timeline(ttid)
        previous = timeline.acceptor.term
        current = await timeline.bump_term(term)
        return JSONResponse({"previous_term": previous, "current_term": current})

    # ---- recovery admin ------------------------------------------------------------------

    def _recovery(self) -> RecoveryAdmin:
        if self.ctx.recovery is None:
            raise _Problem(404, "recovery is not running on this node")
        return self.ctx.recovery

    async def recovery_list(self, request: Request) -> Response:
        self._authorize(request, tenant=False)
        admin = self._recovery()
        return JSONResponse({"recoveries": admin.snapshot_all(), "progress": admin.progress()})

    def _throttles(self) -> RecoveryThrottles:
        if self.ctx.throttles is None:
            raise _Problem(404, "this node has no recovery throttles")
        return self.ctx.throttles

    async def throttles_get(self, request: Request) -> Response:
        self._authorize(request, tenant=False)
        return JSONResponse(self._throttles().to_json())

    async def throttles_patch(self, request: Request) -> Response:
        """Change the given settings at once (the others stay); answers the new ones."""
        self._authorize(request, tenant=False)
        throttles = self._throttles()
        changes = await self._json_body(request, decode_throttle_changes)
        if "max_rate" in changes:
            throttles.intake.set_rate(changes["max_rate"] or None)
        if "serve_max_rate" in changes:
            throttles.serve.set_rate(changes["serve_max_rate"] or None)
        if "max_senders" in changes:
            throttles.set_max_senders(int(changes["max_senders"] or 0))
        if "max_concurrent" in changes:
            throttles.scheduler.set_limit(int(changes["max_concurrent"] or 0))
        log.info("recovery throttles changed: %s", changes)
        return JSONResponse(throttles.to_json())

    async def recovery_trigger(self, request: Request) -> Response:
        ttid = self._ttid(request)
        admin = self._recovery()
        self._timeline(ttid)
        admin.trigger(ttid)
        return JSONResponse({"status": "triggered"})

    async def recovery_cancel(self, request: Request) -> Response:
        ttid = self._ttid(request)
        admin = self._recovery()
        self._timeline(ttid)
        admin.cancel(ttid)
        return JSONResponse({"status": "cancelled"})


    # ---- pull (bootstrap; docs/pull.md) -------------------------------------------------

    def _pull_ttid(self, request: Request) -> TenantTimelineId:
        """Peer or operator scope (node-wide), like the peer exchange."""
        self._authorize(request, tenant=False)
        try:
            return TenantTimelineId(TenantId.parse(request.path_params["tenant_id"]),
                                    TimelineId.parse(request.path_params["timeline_id"]))
        except ValueError as e:
            raise _Problem(400, str(e)) from None

    def _pulls(self) -> PullService:
        if self.ctx.pulls is None:
            raise _Problem(404, "this node does not pull timelines")
        return self.ctx.pulls

    async def pull_start(self, request: Request) -> Response:
        ttid = self._pull_ttid(request)
        sources, max_rate = await self._json_body(request, _decode_pull)
        status = self._pulls().start(ttid, sources, max_rate=max_rate)
        return JSONResponse(status.to_json(), status_code=200 if status.finished else 202)

    async def pull_status(self, request: Request) -> Response:
        ttid = self._pull_ttid(request)
        status = self._pulls().statuses.get(ttid)
        if status is None:
            raise _Problem(404, f"no pull of timeline {ttid} on this node since it started")
        return JSONResponse(status.to_json())

    async def snapshot(self, request: Request) -> Response:
        ttid = self._pull_ttid(request)
        timeline = self._timeline(ttid)
        metrics = self.ctx.metrics
        frames = snapshot_frames(timeline, on_sent=metrics.snapshot_sent_bytes.inc)
        log.info("streaming a snapshot of %s to %s", ttid,
                 request.client.host if request.client else "?")
        pay = None
        if self.ctx.throttles is not None:
            pay = serve_payer(timeline, self.ctx.throttles, self.ctx.heartbeat_timeout,
                              self.ctx.listening_since)
        return StreamingResponse(_closing(frames, pay), media_type="application/octet-stream")


async def _closing(frames: AsyncGenerator[bytes, None], pay: Payer | None = None
                   ) -> AsyncIterator[bytes]:
    """``frames`` closed as soon as the response ends (a peer gone mid-stream), so the
    donor's removal hold is released now, not when the generator is collected. With
    ``pay``, every frame pays the node's serve rate before it goes out (S1; a frame's few
    bytes of framing count with its WAL: a WAL stream pays for its WAL only, and a
    snapshot's header and end frames are a few hundred bytes)."""
    async with aclosing(frames) as stream:
        async for frame in stream:
            if pay is not None:
                await pay(len(frame))
            yield frame


_PEER_URL: Final = re.compile(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
"""A peer's HTTP API as ``from`` lists it: scheme, host, optional port, nothing else."""


def _decode_pull(body: object) -> tuple[list[str], int | None]:
    if not isinstance(body, dict):
        raise ValueError("body: expected a JSON object")
    sources = body.get("from")
    if (not isinstance(sources, list) or not sources or len(sources) > 64
            or not all(isinstance(u, str) and len(u) <= 1024 and _PEER_URL.fullmatch(u)
                       for u in sources)):
        raise ValueError("body.from: expected a list of 1 to 64 peer HTTP URLs "
                         "(http://host:port)")
    for url in sources:
        port = url.rsplit("]", 1)[-1].rpartition(":")[2] if url.count(":") > 1 else ""
        if port.isdigit() and not 0 < int(port) < 65536:
            raise ValueError(f"body.from: {url!r} has no valid port")
    rate = body.get("max_rate")
    if rate is not None and (not isinstance(rate, int) or isinstance(rate, bool)
                             or not 1024 <= rate <= 1 << 40):
        raise ValueError("body.max_rate: expected null or bytes per second (1024 to 2^40)")
    return sources, rate


_THROTTLE_KEYS: Final = {"max_rate": 0, "serve_max_rate": 0, "max_senders": 1,
                         "max_concurrent": 1}
"""The settings ``PATCH /v1/recovery/throttles`` takes, with their least value (rates: 0
or null is unlimited)."""


def decode_throttle_changes(body: object) -> dict[str, int | None]:
    """The body of ``PATCH /v1/recovery/throttles``: some of ``max_rate`` and
    ``serve_max_rate`` (bytes per second, 0 or null: unlimited), ``max_senders`` and
    ``max_concurrent`` (at least 1). ``ValueError`` (400) names the key at fault."""
    if not isinstance(body, dict):
        raise ValueError("body: expected a JSON object")
    unknown = sorted(set(body) - set(_THROTTLE_KEYS))
    if unknown:
        raise ValueError(f"body: unknown setting {unknown[0]!r}; expected some of "
                         f"{', '.join(sorted(_THROTTLE_KEYS))}")
    if not body:
        raise ValueError(f"body: no setting given; expected some of "
                         f"{', '.join(sorted(_THROTTLE_KEYS))}")
    changes: dict[str, int | None] = {}
    for key, value in body.items():
        least = _THROTTLE_KEYS[key]
        if value is None and least == 0:
            changes[key] = None
            continue
        if (not isinstance(value, int) or isinstance(value, bool) or value < least
                or value > 0xFFFF_FFFF_FFFF_FFFF):
            kind = "null or an integer >= 0" if least == 0 else "an integer >= 1"
            raise ValueError(f"body.{key}: expected {kind} (u64), got {value!r}")
        changes[key] = value
    return changes


def _decode_term_bump(body: object) -> int | None:
    if not isinstance(body, dict):
        raise ValueError("body: expected a JSON object")
    term = body.get("term")
    if term is not None and (
        not isinstance(term, int) or isinstance(term, bool)
        or not 0 <= term <= 0xFFFF_FFFF_FFFF_FFFF
    ):
        raise ValueError("body.term: expected null or an integer in u64 range")
    return term


async def _http_exception(request: Request, exc: Exception) -> Response:
    # Starlette's own 404 (no route) and 405 (wrong method), as JSON like everything else.
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))


def build_http_app(node: NodeContext) -> Starlette:
    """The node's HTTP API (see the module docstring). Serve it with ``serve_http``."""
    api = _Api(node)
    tl = "/v1/tenant/{tenant_id}/timeline/{timeline_id}"
    routes = [
        Route("/healthz", _json_errors(api.healthz), methods=["GET"]),
        Route("/metrics", _json_errors(api.metrics), methods=["GET"]),
        Route("/v1/openapi.json", _json_errors(api.openapi), methods=["GET"]),
        Route("/v1/status", _json_errors(api.status), methods=["GET"]),
        Route("/v1/timelines", _json_errors(api.list_timelines), methods=["GET"]),
        Route("/v1/timelines/changes", _json_errors(api.timeline_changes), methods=["GET"]),
        Route("/v1/peer_info", _json_errors(api.peer_info), methods=["POST"]),
        Route("/v1/recovery", _json_errors(api.recovery_list), methods=["GET"]),
        Route("/v1/recovery/throttles", _json_errors(api.throttles_get), methods=["GET"]),
        Route("/v1/recovery/throttles", _json_errors(api.throttles_patch), methods=["PATCH"]),
        Route("/v1/tenant/{tenant_id}/timeline", _json_errors(api.create_timeline),
              methods=["POST"]),
        Route(tl, _json_errors(api.timeline_status), methods=["GET"]),
        Route(tl, _json_errors(api.delete_timeline), methods=["DELETE"]),
        Route(f"{tl}/digest", _json_errors(api.digest), methods=["GET"]),
        Route(f"{tl}/term_bump", _json_errors(api.term_bump), methods=["POST"]),
        Route(f"{tl}/recovery/trigger", _json_errors(api.recovery_trigger), methods=["POST"]),
        Route(f"{tl}/recovery/cancel", _json_errors(api.recovery_cancel), methods=["POST"]),
        Route(f"{tl}/pull", _json_errors(api.pull_start), methods=["POST"]),
        Route(f"{tl}/pull", _json_errors(api.pull_status), methods=["GET"]),
        Route(f"{tl}/snapshot", _json_errors(api.snapshot), methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_exception})
