"""What a donor pays for WAL it serves to a recovering peer: the node's ``serve`` rate.

Rules
-----
S1  Every WAL byte a donor serves to a peer catching up pays the node-wide ``serve`` rate
    limit (``--recovery-serve-max-rate``): WAL streams of peer recovery (the WAL port,
    with a term) and timeline snapshots of a pull (the HTTP port, ``GET …/snapshot``)
    alike, so a node cannot be drained past its limit by choosing the other way in.
S2  A timeline whose quorum is at risk (core rules T6-T7, from this node's peer table,
    settled a heartbeat timeout after the port started listening) is exempt, re-checked
    every ``RISK_RECHECK`` seconds and while a payer waits.
S3  With the rate off (``None``) nothing waits; the bytes are still counted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import trio

from ..core import quorum_at_risk
from ..recovery import RecoveryThrottles
from ..timeline import Timeline

__all__ = ["RISK_RECHECK", "Payer", "quorum_at_risk_here", "serve_payer"]

RISK_RECHECK: Final = 1.0
"""Seconds between re-checks of a paying stream's quorum verdict (S2)."""

Payer = Callable[[int], Awaitable[None]]


def quorum_at_risk_here(timeline: Timeline, heartbeat_timeout: float,
                        listening_since: float) -> bool:
    """Core rules T6-T7 for ``timeline``, from this node's peer table (rule S2)."""
    a = timeline.acceptor
    now = trio.current_time()
    return quorum_at_risk(a.node_id, a.flush_lsn, a.commit_lsn, timeline.current_peers(),
                          now, heartbeat_timeout,
                          settled=now - listening_since >= heartbeat_timeout)


def serve_payer(timeline: Timeline, throttles: RecoveryThrottles, heartbeat_timeout: float,
                listening_since: float) -> Payer:
    """One stream's payer (rules S1-S3): await it with the size of every WAL message or
    frame before sending the next."""
    checked = -float("inf")
    exempt = False

    async def at_risk() -> bool:
        nonlocal checked, exempt
        checked = trio.current_time()
        exempt = quorum_at_risk_here(timeline, heartbeat_timeout, listening_since)
        return exempt

    async def pay(nbytes: int) -> None:
        serve = throttles.serve
        if serve.rate is None:
            serve.bytes += nbytes
            return
        if trio.current_time() - checked >= RISK_RECHECK:
            await at_risk()
        await serve.pay(nbytes, exempt=exempt, release=at_risk)

    return pay
