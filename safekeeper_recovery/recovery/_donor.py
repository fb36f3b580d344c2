"""How the engine talks to a donor: its timeline status and its WAL stream.

A Protocol seam (httpx transports style): production uses
``transport.NetworkDonorConnector`` (HTTP status through the project's httpx client, WAL
over ``wal_stream``); the simulator and unit tests plug in ``timeline.InProcessDonorConnector``
or their own. ``DonorStatus`` lives in ``core`` (re-exported here).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from ..core import (
    DonorStatus,
    Keepalive,
    Lsn,
    PeerInfo,
    StatusUpdate,
    TenantTimelineId,
    Term,
    WalData,
)

__all__ = ["DonorConnector", "DonorStatus", "DonorStream"]


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
