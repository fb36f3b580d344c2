"""``wal_stream`` over a WebSocket: the adapter of the timeline's read pipeline.

:func:`serve_stream_connection` runs :func:`~safekeeper_recovery.timeline.run_wal_sender`
(the rules of the stream live there) with a WebSocket as its ``send``, and reads the
reader's StatusUpdates. Each way a stream stops is its own type with its own close code
(``StreamStopped.close_code``): 4000 term changed, 4001 WAL removed, 4008 idle reader,
4011 removed WAL that the archive cannot serve.

Each running stream is listed in the node's :class:`WalSenders` registry (by timeline) as a
:class:`WalSenderInfo`; the status JSON's ``walsenders`` comes from there.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Final, final

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ..core import (
    Lsn,
    RemoteProtocolError,
    StatusUpdate,
    StreamSenderMessage,
    StreamStopped,
    TenantTimelineId,
    Term,
    WalData,
    decode_stream_reader_message,
    encode,
)
from ..storage import Archive
from ..timeline import Timeline, run_wal_sender

__all__ = [
    "CLOSE_UNSUPPORTED_DATA",
    "StreamIdle",
    "WalSenderFeedback",
    "WalSenderInfo",
    "WalSenders",
    "serve_stream_connection",
]

log = logging.getLogger(__name__)

CLOSE_UNSUPPORTED_DATA: Final = 1003
_sender_ids = itertools.count(1)


class StreamIdle(StreamStopped):
    """The reader took nothing for the send timeout: the stream is closed as idle."""

    close_code: int | None = 4008


@final
@attrs.frozen
class WalSenderFeedback:
    """The reader's last StatusUpdate on one stream."""

    write_lsn: Lsn
    flush_lsn: Lsn
    apply_lsn: Lsn
    timestamp_us: int

    def to_json(self) -> dict[str, object]:
        return {
            "write_lsn": str(self.write_lsn),
            "flush_lsn": str(self.flush_lsn),
            "apply_lsn": str(self.apply_lsn),
            "timestamp_us": self.timestamp_us,
        }


@final
@attrs.define
class WalSenderInfo:
    """One running ``wal_stream`` connection: who reads, from where, how far it got.

    ``sent_lsn`` and ``feedback`` change while the stream runs (the timeline's ``changed``
    fires when feedback comes).
    """

    id: int
    remote: str
    start_lsn: Lsn
    term: Term | None
    sent_lsn: Lsn
    feedback: WalSenderFeedback | None = None

    def to_json(self) -> dict[str, object]:
        """The entry of the status JSON's ``walsenders`` list (LSNs as ``X/Y`` strings)."""
        return {
            "remote": self.remote,
            "start_lsn": str(self.start_lsn),
            "term": self.term,
            "sent_lsn": str(self.sent_lsn),
            "feedback": None if self.feedback is None else self.feedback.to_json(),
        }


class WalSenders:
    """The WAL senders running on a node, by timeline: the WAL port adds and removes them,
    the status endpoint and tests read them (:meth:`of`). One per node."""

    def __init__(self) -> None:
        self._by_timeline: dict[TenantTimelineId, dict[int, WalSenderInfo]] = {}

    def of(self, ttid: TenantTimelineId) -> list[WalSenderInfo]:
        """The senders of ``ttid`` now, oldest first (empty if none)."""
        return list(self._by_timeline.get(ttid, {}).values())

    @contextmanager
    def listed(self, ttid: TenantTimelineId, info: WalSenderInfo) -> Iterator[WalSenderInfo]:
        """List ``info`` under ``ttid`` for the duration of the ``with`` block."""
        self._by_timeline.setdefault(ttid, {})[info.id] = info
        try:
            yield info
        finally:
            senders = self._by_timeline[ttid]
            del senders[info.id]
            if not senders:
                del self._by_timeline[ttid]


async def serve_stream_connection(
    ws: WebSocketConnection,
    timeline: Timeline,
    start_lsn: Lsn,
    term: Term | None,
    *,
    remote: str,
    senders: WalSenders,
    keepalive_interval: float = 1.0,
    send_timeout: float = math.inf,
    archive: Archive | None = None,
    pay: Callable[[int], Awaitable[None]] | None = None,
) -> None:
    """Run one accepted ``wal_stream`` WebSocket: WAL out, StatusUpdates in.

    ``pay`` (a recovery stream: the node's serve throttle) is awaited with the size of
    every WAL message before it is sent.

    A reader that takes nothing for ``send_timeout`` seconds (one message cannot be sent;
    a keepalive goes out every ``keepalive_interval`` even when idle, so a vanished or
    stuck reader fills the socket buffers) ends the stream with :class:`StreamIdle`
    (close code 4008).

    The connection is listed in ``senders`` (under the timeline's id) as a
    :class:`WalSenderInfo` while it runs; ``timeline.changed`` fires when it comes, goes
    and reports feedback. With ``archive``, WAL this node removed is served from it.
    Returns normally when the client went away. Raises ``StreamStopped`` (its subclasses),
    :class:`RemoteProtocolError` (a malformed message from the reader) or the timeline's
    error. Does not close ``ws``.
    """
    info = WalSenderInfo(next(_sender_ids), remote, start_lsn, term, sent_lsn=start_lsn)
    errors: list[Exception] = []

    def sent(pos: Lsn) -> None:
        info.sent_lsn = pos

    async def send(msg: StreamSenderMessage) -> None:
        if pay is not None and isinstance(msg, WalData) and msg.data:
            await pay(len(msg.data))
        with trio.move_on_after(send_timeout) as stuck:
            await ws.send_message(encode(msg))
        if stuck.cancelled_caught:
            raise StreamIdle(
                f"the reader took nothing for {send_timeout:g} s: closing an idle stream"
            )

    async def stream(cancel_scope: trio.CancelScope) -> None:
        try:
            await run_wal_sender(
                timeline, start_lsn, term, send,
                keepalive_interval=keepalive_interval, on_sent=sent, archive=archive,
            )
        except ConnectionClosed:
            pass  # the reader left
        except Exception as e:  # re-raised by the caller, after the nursery
            errors.append(e)
        cancel_scope.cancel()

    async def read_feedback(cancel_scope: trio.CancelScope) -> None:
        while True:
            try:
                raw = await ws.get_message()
            except ConnectionClosed:
                break
            try:
                if isinstance(raw, str):
                    raise RemoteProtocolError(
                        "expected a binary message, got text", close_code=CLOSE_UNSUPPORTED_DATA
                    )
                msg: StatusUpdate = decode_stream_reader_message(raw)
            except RemoteProtocolError as e:
                errors.append(e)
                break
            info.feedback = WalSenderFeedback(
                msg.write_lsn, msg.flush_lsn, msg.apply_lsn, msg.timestamp_us
            )
            timeline.changed.notify()
        cancel_scope.cancel()

    try:
        with senders.listed(timeline.ttid, info):
            timeline.changed.notify()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream, nursery.cancel_scope)
                nursery.start_soon(read_feedback, nursery.cancel_scope)
    finally:
        timeline.changed.notify()  # gone from ``senders`` by now
    if errors:
        raise errors[0]
