"""The network donor connector: a donor's status over HTTP, its WAL over ``wal_stream``.

Implements the recovery engine's ``DonorConnector`` Protocol for real nodes; each way the
donor can end its stream arrives as a typed close code and leaves as a typed recovery
outcome (4000 → ``TermChanged``, anything else → ``DonorUnavailable``); a handshake refused
as busy (503 with ``"reason": "donor_busy"``: the donor's cap on recovery senders) is
``DonorBusy``.

Rules:

1. Without ``pooled`` every status request has its own HTTP client (nothing to close).
2. With ``pooled`` (the node) there is one keep-alive HTTP client per donor address,
   made on first use and closed by :meth:`NetworkDonorConnector.aclose`: a node coming
   back to hundreds of lagging timelines asks each donor's status once per attempt, and a
   new TCP connection per request was the largest fixed cost of an attempt (timed in
   docs/throttles.md). A request on a pooled client that fails without an answer (the
   donor restarted and closed an idle connection) is retried once; the pool has dropped
   the broken connection, so the retry connects anew.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from ..core import (
    DonorBusy,
    DonorStatus,
    DonorUnavailable,
    Keepalive,
    Lsn,
    PeerInfo,
    StatusUpdate,
    TenantTimelineId,
    Term,
    TermChanged,
    TermHistory,
    TermLsn,
    WalData,
)
from ._http_client import HttpError, HttpUnavailable, SafekeeperClient
from ._wal_client import WalConnectError, WalStreamClosed, WalStreamConnection, open_wal_stream

__all__ = ["NetworkDonorConnector", "NetworkStream", "parse_donor_status"]


def parse_donor_status(doc: object) -> DonorStatus:
    """Require only ``acceptor_state.term`` and ``.term_history`` (reference §8: lenient)."""
    try:
        if not isinstance(doc, dict):
            raise TypeError(f"expected a JSON object, got {type(doc).__name__}")
        acceptor_state = doc["acceptor_state"]
        term = acceptor_state["term"]
        if not isinstance(term, int) or isinstance(term, bool) or term < 0:
            raise ValueError(f"bad term {term!r}")
        history = TermHistory(
            tuple(
                TermLsn(int(e["term"]), Lsn.parse(e["lsn"]))
                for e in acceptor_state["term_history"]
            )
        )
        return DonorStatus(term, history)
    except (KeyError, TypeError, ValueError) as e:
        raise DonorUnavailable(f"donor status does not parse: {e!r}") from None


class NetworkStream:
    """A donor's ``wal_stream`` as the engine's ``DonorStream``."""

    def __init__(self, conn: WalStreamConnection) -> None:
        self._conn = conn

    async def receive(self) -> WalData | Keepalive:
        try:
            return await self._conn.receive()
        except WalStreamClosed as e:
            raise _stream_closed(e) from e

    async def send_status(self, update: StatusUpdate) -> None:
        try:
            await self._conn.send_status(update)
        except WalStreamClosed as e:
            # The close is often first seen here (between two receives): same translation.
            raise _stream_closed(e) from e


def _stream_closed(e: WalStreamClosed) -> TermChanged | DonorUnavailable:
    """The typed outcome of the donor closing its stream (its term moved, or trouble)."""
    reason = str(e.reason)
    if e.term_changed:
        return TermChanged(f"donor ended the stream: {reason}")
    return DonorUnavailable(f"donor ended the stream: code {e.code}: {reason}")


class NetworkDonorConnector:
    """Talks to donors over the network, authenticating with ``token`` when given."""

    def __init__(
        self, *, token: str | None = None, http_timeout: float = 10.0,
        connect_timeout: float = 10.0, pooled: bool = False,
    ) -> None:
        self.token = token
        self.http_timeout = http_timeout
        self.connect_timeout = connect_timeout
        self.pooled = pooled
        self._clients: dict[str, SafekeeperClient] = {}

    async def fetch_status(self, donor: PeerInfo, ttid: TenantTimelineId) -> DonorStatus:
        try:
            if not self.pooled:
                async with self._client(donor) as client:
                    doc = await client.timeline_status(ttid)
            else:
                doc = await self._pooled_status(donor, ttid)
        except HttpError as e:
            raise DonorUnavailable(f"donor {donor.node_id} status: {e}") from e
        return parse_donor_status(doc)

    async def aclose(self) -> None:
        """Close the pooled clients (rule 2); the connector stays usable."""
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()

    def _client(self, donor: PeerInfo) -> SafekeeperClient:
        return SafekeeperClient(donor.http_addr, token=self.token, timeout=self.http_timeout)

    async def _pooled_status(self, donor: PeerInfo, ttid: TenantTimelineId
                             ) -> dict[str, object]:
        client = self._clients.get(donor.http_addr)
        if client is None:
            client = self._clients[donor.http_addr] = self._client(donor)
            return await client.timeline_status(ttid)
        try:
            return await client.timeline_status(ttid)
        except HttpUnavailable:
            # Maybe a connection the donor closed while idle: the pool dropped it, so
            # the second try connects anew (and fails the same if the donor is down).
            return await client.timeline_status(ttid)

    def open_stream(
        self, donor: PeerInfo, ttid: TenantTimelineId, start_lsn: Lsn, term: Term
    ) -> AbstractAsyncContextManager[NetworkStream]:
        return self._open(donor, ttid, start_lsn, term)

    @asynccontextmanager
    async def _open(
        self, donor: PeerInfo, ttid: TenantTimelineId, start_lsn: Lsn, term: Term
    ) -> AsyncIterator[NetworkStream]:
        # Errors raised inside the body are already translated by NetworkStream; this
        # handler gives connection failures (handshake refused, refused port) their type.
        try:
            async with open_wal_stream(
                donor.wal_addr, ttid.tenant_id, ttid.timeline_id, start_lsn, term=term,
                token=self.token, connect_timeout=self.connect_timeout,
            ) as conn:
                yield NetworkStream(conn)
        except WalConnectError as e:
            if _is_busy(e):
                raise DonorBusy(f"donor {donor.node_id} is busy: {_error_text(e)}") from e
            raise DonorUnavailable(f"donor {donor.node_id} WAL stream: {e}") from e
        except OSError as e:
            raise DonorUnavailable(f"donor {donor.node_id} WAL stream: {e}") from e


def _refusal(e: WalConnectError) -> dict[str, object]:
    try:
        doc = json.loads(e.body or "")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _is_busy(e: WalConnectError) -> bool:
    """A refusal by the donor's cap on recovery senders (typed by its ``reason`` field)."""
    return e.status == 503 and _refusal(e).get("reason") == "donor_busy"


def _error_text(e: WalConnectError) -> str:
    return str(_refusal(e).get("error") or e)
