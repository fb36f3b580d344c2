"""Node-wide peer bookkeeping shared by every timeline of a node.

The peer exchange sends a timeline's info only when it changes, plus a small heartbeat
(reference §9, made cheap for 10,000 timelines). So a peer's entry in a timeline's peers
table is not re-stamped every second; instead :class:`PeerHub` remembers, per peer node,
when that node last *confirmed* that everything it told us is still current (a heartbeat
in sequence). An entry's freshness is the later of its own receive time and that
confirmation (:meth:`PeerHub.last_heard`): a silent or restarted peer still ages out.

The hub is also the change feed of the sending side: every timeline reports each change
(``Timeline.changed``) to :meth:`PeerHub.timeline_changed`, which calls the subscribers
(the peer exchange marks the timeline dirty). Both are O(1) per event: no per-timeline task
or timer.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from ..core import NodeId, PeerInfo, TenantTimelineId

__all__ = ["PEER_SILENCE_WAKE", "PeerHub"]

PEER_SILENCE_WAKE = 5.0
"""Default of :attr:`PeerHub.silence_wake`: the default heartbeat timeout."""

ChangeListener = Callable[[TenantTimelineId], None]


class PeerHub:
    """Peer liveness (receiving side) and the timeline change feed (sending side)."""

    def __init__(self, silence_wake: float = PEER_SILENCE_WAKE) -> None:
        self.silence_wake = silence_wake
        """A peer silent for longer than this (seconds) may have been counted dead (the
        node's heartbeat timeout): when it speaks again, waiters must re-check. A shorter
        silence changes nothing anyone could have seen, so it wakes nobody."""
        self.confirmed: dict[NodeId, float] = {}
        """Per peer node: our clock when it last confirmed all its info current."""
        self.sessions: dict[NodeId, tuple[str, int]] = {}
        """Per peer node: its exchange session and the last batch seq applied in order."""
        self.last_session: dict[NodeId, str] = {}
        """Per peer node: the session of the last batch received from it, in order or not."""
        self._listeners: list[ChangeListener] = []
        self._restart_listeners: list[Callable[[NodeId], None]] = []

    # ---- liveness -----------------------------------------------------------------------

    def last_heard(self, info: PeerInfo) -> float:
        """When ``info`` was last known current: received, or confirmed since."""
        confirmed = self.confirmed.get(info.node_id)
        if confirmed is None or confirmed <= info.received_at:
            return info.received_at
        return confirmed

    def current(self, info: PeerInfo) -> PeerInfo:
        """``info`` with ``received_at`` set to :meth:`last_heard` (what selection reads)."""
        heard = self.last_heard(info)
        return info if heard == info.received_at else attrs.evolve(info, received_at=heard)

    def confirm(self, node_id: NodeId, now: float) -> bool:
        """``node_id`` confirmed all its info current at ``now``. Returns whether it had
        been silent for more than :attr:`silence_wake` (its info may have been counted
        dead: waiters should re-check)."""
        before = self.confirmed.get(node_id)
        self.confirmed[node_id] = now
        return before is not None and now - before > self.silence_wake

    def session_seen(self, node_id: NodeId, session: str) -> bool:
        """A batch of ``node_id``'s exchange ``session`` arrived. Returns whether the peer
        restarted (a session other than the last one seen from it), after telling the
        :meth:`subscribe_restarts` listeners. The first session ever seen is no restart:
        we may have started together, and our first full batch may have reached it."""
        before = self.last_session.get(node_id)
        self.last_session[node_id] = session
        if before is None or before == session:
            return False
        for listener in list(self._restart_listeners):
            listener(node_id)
        return True

    def subscribe_restarts(self, listener: Callable[[NodeId], None]) -> Callable[[], None]:
        """Call ``listener(node_id)`` when a peer turns out to have restarted (it has lost
        everything we told it); returns the unsubscriber."""
        self._restart_listeners.append(listener)
        return lambda: self._restart_listeners.remove(listener)

    # ---- change feed --------------------------------------------------------------------

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener(ttid)`` on every change of a timeline; returns the unsubscriber."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def timeline_changed(self, ttid: TenantTimelineId) -> None:
        for listener in self._listeners:
            listener(ttid)
