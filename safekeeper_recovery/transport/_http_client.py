"""A client of a node's HTTP API. The one module of the package that imports httpx.

::

    async with SafekeeperClient("http://127.0.0.1:7676", token=jwt) as client:
        status = await client.timeline_status(ttid)

Every method raises :class:`HttpError` when the node answers with an error status (its
``{"error": …}`` message included) and :class:`HttpUnavailable` (a subclass, ``status``
0) when the node cannot be reached or does not answer within ``timeout`` seconds.
"""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Self

import httpx

from ..core import Lsn, SafekeeperError, TenantTimelineId, Term
from ..timeline import Changes, TimelineParams
from ._json import PeerInfoBatch, decode_changes, encode_create_timeline, encode_peer_info_batch
from ._timeline_status import TimelineStatus, parse_timeline_status

__all__ = ["HttpError", "HttpUnavailable", "SafekeeperClient"]


class HttpError(SafekeeperError):
    """The node answered ``status`` (>= 400) with ``message`` (or could not be reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message


class HttpUnavailable(HttpError):
    """No answer: connection refused or reset, timeout, malformed response."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """httpx's default TLS context, built once per process and shared by every client.

    httpx builds one per client otherwise, loading the CA bundle each time: a recovery
    attempt makes a client to ask its donor's status, and on a node coming back to
    hundreds of lagging timelines that was 6 % of its main thread (py-spy)."""
    return httpx.create_ssl_context()


def _tl_path(ttid: TenantTimelineId) -> str:
    return f"/v1/tenant/{ttid.tenant_id}/timeline/{ttid.timeline_id}"


class SafekeeperClient:
    """An async client of one node; use as ``async with`` (or call :meth:`aclose`).

    ``timeout`` (seconds) bounds connecting and each read/write of every request.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout),
            transport=transport, verify=_ssl_context(),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: dict[str, str] | None = None,
        extra_time: float = 0.0,
    ) -> object:
        content = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        # A long poll's answer may take extra_time before its first byte.
        timeout = httpx.Timeout(self.timeout, read=self.timeout + extra_time)
        try:
            response = await self._client.request(
                method, path, content=content, params=params, headers=headers,
                timeout=timeout,
            )
        # Transport errors, timeouts, protocol errors; a URL it cannot use (a bad port).
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise HttpUnavailable(
                f"{method} {self.base_url}{path}: {type(e).__name__}: {e}"
            ) from e
        try:
            payload: object = response.json() if response.content else None
        except ValueError:
            payload = None
        if response.status_code >= 400:
            message = response.text[:500]
            if isinstance(payload, dict) and isinstance(payload.get("error"), str):
                message = payload["error"]
            raise HttpError(response.status_code, message)
        if payload is None and method != "DELETE":
            raise HttpUnavailable(f"{method} {self.base_url}{path}: answer is not JSON")
        return payload

    async def _object(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: dict[str, str] | None = None,
        extra_time: float = 0.0,
    ) -> dict[str, object]:
        payload = await self._request(method, path, body=body, params=params,
                                      extra_time=extra_time)
        if not isinstance(payload, dict):
            raise HttpUnavailable(f"{method} {self.base_url}{path}: expected a JSON object")
        return payload

    # ---- node ------------------------------------------------------------------------

    async def status(self) -> dict[str, object]:
        return await self._object("GET", "/v1/status")

    async def timelines(self) -> list[dict[str, object]]:
        listing = (await self._object("GET", "/v1/timelines")).get("timelines")
        if not isinstance(listing, list):
            raise HttpUnavailable("GET /v1/timelines: expected a list of timelines")
        return listing

    async def timeline_changes(self, session: str | None = None, after: int = 0,
                               wait: float = 0.0) -> Changes:
        """The timelines changed after the cursor ``(session, after)`` of an earlier answer
        (none: ``reset``), waiting up to ``wait`` seconds for one (a long poll: this request
        may take ``wait`` plus the usual timeout)."""
        params = {"after": str(after), "timeout": str(wait)}
        if session is not None:
            params["session"] = session
        payload = await self._object("GET", "/v1/timelines/changes", params=params,
                                     extra_time=wait)
        try:
            return decode_changes(payload)
        except ValueError as e:
            raise HttpUnavailable(f"GET /v1/timelines/changes: {e}") from None

    async def metrics(self) -> str:
        try:
            response = await self._client.get("/metrics")
        except httpx.HTTPError as e:
            raise HttpUnavailable(f"GET {self.base_url}/metrics: {e}") from e
        if response.status_code != 200:
            raise HttpError(response.status_code, response.text[:500])
        return response.text

    async def post_peer_info(self, batch: PeerInfoBatch) -> dict[str, object]:
        """Push one batch; returns ``{"applied": n, "ignored": m}``."""
        return await self._object("POST", "/v1/peer_info", body=encode_peer_info_batch(batch))

    # ---- timelines ---------------------------------------------------------------------

    async def timeline_status(self, ttid: TenantTimelineId) -> dict[str, object]:
        """The status JSON (reference §8 shape; parse with ``parse_acceptor_state``)."""
        return await self._object("GET", _tl_path(ttid))

    async def typed_timeline_status(self, ttid: TenantTimelineId) -> TimelineStatus:
        """The status JSON validated into a :class:`TimelineStatus`; an answer of the wrong
        shape raises :class:`HttpUnavailable` naming the field at fault."""
        doc = await self.timeline_status(ttid)
        try:
            return parse_timeline_status(doc)
        except ValueError as e:
            raise HttpUnavailable(f"GET {_tl_path(ttid)}: {e}") from None

    async def create_timeline(
        self,
        ttid: TenantTimelineId,
        start_lsn: Lsn,
        *,
        wal_seg_size: int = 16 * 1024 * 1024,
        pg_version: int = 0,
        system_id: int = 0,
    ) -> dict[str, object]:
        """Create (or confirm, if equal) a timeline; returns its status JSON.

        ``HttpError`` 409 if it exists with other parameters.
        """
        params = TimelineParams(start_lsn, wal_seg_size, pg_version, system_id)
        body = encode_create_timeline(ttid.timeline_id, params)
        return await self._object("POST", f"/v1/tenant/{ttid.tenant_id}/timeline", body=body)

    async def delete_timeline(self, ttid: TenantTimelineId) -> None:
        """Delete a timeline (``HttpError`` 404 if it does not exist)."""
        await self._request("DELETE", _tl_path(ttid))

    async def digest(self, ttid: TenantTimelineId, from_lsn: Lsn, until_lsn: Lsn) -> str:
        """Hex SHA-256 of the durable WAL in ``[from_lsn, until_lsn)``."""
        answer = await self._object(
            "GET", f"{_tl_path(ttid)}/digest",
            params={"from_lsn": str(from_lsn), "until_lsn": str(until_lsn)},
        )
        sha = answer.get("sha256")
        if not isinstance(sha, str):
            raise HttpUnavailable("digest answer has no sha256")
        return sha

    async def term_bump(self, ttid: TenantTimelineId, term: Term | None = None) -> tuple[
        Term, Term
    ]:
        """Raise the term (to ``term``, or by one); returns ``(previous, current)``."""
        answer = await self._object("POST", f"{_tl_path(ttid)}/term_bump", body={"term": term})
        previous, current = answer.get("previous_term"), answer.get("current_term")
        if not isinstance(previous, int) or not isinstance(current, int):
            raise HttpUnavailable("term_bump answer lacks previous_term/current_term")
        return previous, current

    # ---- pull (bootstrap) ----------------------------------------------------------------

    async def pull(self, ttid: TenantTimelineId, sources: list[str], *,
                   max_rate: int | None = None) -> dict[str, object]:
        """Ask the node to pull ``ttid`` from ``sources`` (peer HTTP URLs); returns the pull
        status (``state`` ``exists`` when the node has it already). ``HttpError`` 409 if a
        pull of it runs already."""
        body: dict[str, object] = {"from": sources}
        if max_rate is not None:
            body["max_rate"] = max_rate
        return await self._object("POST", f"{_tl_path(ttid)}/pull", body=body)

    async def pull_status(self, ttid: TenantTimelineId) -> dict[str, object]:
        """The node's last pull of ``ttid`` (``HttpError`` 404 if there was none)."""
        return await self._object("GET", f"{_tl_path(ttid)}/pull")

    @asynccontextmanager
    async def snapshot(self, ttid: TenantTimelineId) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream the node's snapshot of ``ttid`` (a donor's side of a pull): yields the
        body's bytes as they come. A failure to connect, an error status, or the stream
        breaking raise :class:`HttpError`/:class:`HttpUnavailable`."""
        path = f"{_tl_path(ttid)}/snapshot"
        try:
            async with self._client.stream("GET", path) as response:
                if response.status_code >= 400:
                    await response.aread()
                    message = response.text[:500]
                    try:
                        payload = response.json()
                    except ValueError:
                        payload = None
                    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
                        message = payload["error"]
                    raise HttpError(response.status_code, message)
                yield self._body_bytes(response, path)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise HttpUnavailable(f"GET {self.base_url}{path}: {type(e).__name__}: {e}") from e

    async def _body_bytes(self, response: httpx.Response, path: str) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as e:
            raise HttpUnavailable(
                f"GET {self.base_url}{path}: stream broke: {type(e).__name__}: {e}") from e

    # ---- recovery admin ----------------------------------------------------------------

    async def recovery_list(self) -> list[dict[str, object]]:
        listing = (await self._object("GET", "/v1/recovery")).get("recoveries")
        if not isinstance(listing, list):
            raise HttpUnavailable("GET /v1/recovery: expected a list of recoveries")
        return listing

    async def recovery_throttles(self) -> dict[str, object]:
        """``GET /v1/recovery/throttles``: the node's throttles and their counters."""
        return await self._object("GET", "/v1/recovery/throttles")

    async def set_recovery_throttles(self, **changes: int | None) -> dict[str, object]:
        """``PATCH /v1/recovery/throttles`` with ``changes`` (``max_rate``,
        ``serve_max_rate``: bytes/s, ``None`` unlimited; ``max_senders``,
        ``max_concurrent``); returns the throttles as they are now."""
        return await self._object("PATCH", "/v1/recovery/throttles", body=changes)

    async def recovery_trigger(self, ttid: TenantTimelineId) -> None:
        await self._object("POST", f"{_tl_path(ttid)}/recovery/trigger")

    async def recovery_cancel(self, ttid: TenantTimelineId) -> None:
        await self._object("POST", f"{_tl_path(ttid)}/recovery/cancel")

