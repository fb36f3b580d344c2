"""The network donor connector: a donor's status over HTTP, its WAL over ``wal_stream``.

Implements the recovery engine's ``DonorConnector`` Protocol for real nodes; each way the
donor can end its stream arrives as a typed close code and leaves as a typed recovery
outcome (4000 → ``TermChanged``, anything else → ``DonorUnavailable``); a handshake refused
as busy (503 with ``"reason": "donor_busy"``: the donor's cap on recovery senders) is
``DonorBusy``.
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
from ._http_client import HttpError, SafekeeperClient
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
        self, *, token: str | None = None, http_timeout: float = 10.0, connect_timeout: float = 10.0
    ) -> None:
        self.token = token
        self.http_timeout = http_timeout
        self.connect_timeout = connect_timeout

    async def fetch_status(self, donor: PeerInfo, ttid: TenantTimelineId) -> DonorStatus:
        try:
            async with SafekeeperClient(
                donor.http_addr, token=self.token, timeout=self.http_timeout
            ) as client:
                doc = await client.timeline_status(ttid)
        except HttpError as e:
            raise DonorUnavailable(f"donor {donor.node_id} status: {e}") from e
        return parse_donor_status(doc)

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
