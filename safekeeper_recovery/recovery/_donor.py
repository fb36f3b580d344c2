"""How the engine talks to a donor: its timeline status and its WAL stream.

A Protocol seam (httpx transports style): production uses :class:`NetworkDonorConnector`
(HTTP status through the project's httpx client, WAL over ``wal_stream``); the simulator
and unit tests plug in in-memory connectors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Protocol

import attrs

from ..core import (
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

if TYPE_CHECKING:
    from ..transport import WalStreamClosed

__all__ = [
    "DonorConnector",
    "DonorStatus",
    "DonorStream",
    "NetworkDonorConnector",
    "parse_donor_status",
]


@attrs.frozen
class DonorStatus:
    """The two fields of the donor's status that recovery needs (parsed leniently)."""

    term: Term
    term_history: TermHistory


class DonorStream(Protocol):
    async def receive(self) -> WalData | Keepalive:
        """Next message; raises TermChanged / DonorUnavailable when the donor ends it."""

    async def send_status(self, update: StatusUpdate) -> None: ...


class DonorConnector(Protocol):
    async def fetch_status(self, donor: PeerInfo, ttid: TenantTimelineId) -> DonorStatus:
        """Raise DonorUnavailable on any transport error or malformed answer."""

    def open_stream(
        self, donor: PeerInfo, ttid: TenantTimelineId, start_lsn: Lsn, term: Term
    ) -> AbstractAsyncContextManager[DonorStream]:
        """Connect to the donor's WAL stream naming ``term``; raise DonorUnavailable (or
        ``DonorTimeout``) when it cannot be opened within the connector's connect timeout."""


def parse_donor_status(doc: object) -> DonorStatus:
    """Require only ``acceptor_state.term`` and ``.term_history`` (reference §8: lenient)."""
    try:
        assert isinstance(doc, dict)
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
    except (AssertionError, KeyError, TypeError, ValueError) as e:
        raise DonorUnavailable(f"donor status does not parse: {e!r}") from None


class _NetworkStream:
    def __init__(self, conn: object) -> None:
        self._conn = conn

    async def receive(self) -> WalData | Keepalive:
        from ..transport import WalStreamClosed

        try:
            return await self._conn.receive()  # type: ignore[attr-defined, no-any-return]  # WalStreamConnection
        except WalStreamClosed as e:
            raise _stream_closed(e) from e

    async def send_status(self, update: StatusUpdate) -> None:
        from ..transport import WalStreamClosed

        try:
            await self._conn.send_status(update)  # type: ignore[attr-defined]  # WalStreamConnection
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
        from ..transport import HttpError, SafekeeperClient

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
    ) -> AbstractAsyncContextManager[DonorStream]:
        return self._open(donor, ttid, start_lsn, term)

    @asynccontextmanager
    async def _open(
        self, donor: PeerInfo, ttid: TenantTimelineId, start_lsn: Lsn, term: Term
    ) -> AsyncIterator[DonorStream]:
        from ..transport import WalConnectError, open_wal_stream

        # Errors raised inside the body are already translated by _NetworkStream; this
        # handler gives connection failures (handshake refused, refused port) their type.
        try:
            async with open_wal_stream(
                donor.wal_addr, ttid.tenant_id, ttid.timeline_id, start_lsn, term=term,
                token=self.token, connect_timeout=self.connect_timeout,
            ) as conn:
                yield _NetworkStream(conn)
        except (WalConnectError, OSError) as e:
            raise DonorUnavailable(f"donor {donor.node_id} WAL stream: {e}") from e
