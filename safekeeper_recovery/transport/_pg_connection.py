"""One PostgreSQL protocol connection over a trio stream: read whole frontend messages,
write backend messages, with the timeouts of the pg port.

Rules
-----
N1  :meth:`PgConnection.receive` raises :class:`ClientGone` at end of file or a broken
    socket, and :class:`PgError` (fatal, 08P01) for malformed framing (``pgproto`` F1-F3).
N2  A write that cannot be completed within ``send_timeout`` raises :class:`ClientStuck`
    (the client takes nothing): the connection cannot go on, a message may be half sent.
N3  :meth:`PgConnection.send_parts` writes its parts in order as if joined, through
    vectored ``sendmsg`` calls on a socket (no copy of the parts into one buffer; at most
    ``_MAX_IOV`` parts a call), else through one joined ``send``; N2 holds for the whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, final

import trio

from ..core import StreamStopped
from ..pgproto import FrontendMessage, FrontendParser

__all__ = ["ClientGone", "ClientStuck", "PgConnection"]

_READ_SIZE = 64 * 1024
_MAX_IOV: Final = 512
"""Parts per ``sendmsg`` call (Linux allows 1024 iovecs)."""


class ClientGone(Exception):
    """The client closed the connection or it broke (N1)."""


class ClientStuck(StreamStopped):
    """The client took nothing for the send timeout (N2)."""


@final
class PgConnection:
    """See the module docstring. Does not own ``stream`` (the server closes it)."""

    def __init__(self, stream: trio.abc.Stream, remote: str, *, max_message: int,
                 send_timeout: float = math.inf) -> None:
        self.stream = stream
        self.remote = remote
        self.parser = FrontendParser(max_message)
        self.send_timeout = send_timeout
        self.sent_bytes = 0

    async def receive(self) -> FrontendMessage:
        """The next frontend message (N1)."""
        while True:
            msg = self.parser.next_message()
            if msg is not None:
                return msg
            try:
                data = await self.stream.receive_some(_READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                raise ClientGone(f"connection broke: {e}") from None
            if not data:
                raise ClientGone("client closed the connection")
            self.parser.feed(data)

    async def send(self, data: bytes) -> None:
        """Write ``data`` (N2); :class:`ClientGone` if the socket broke."""
        with trio.move_on_after(self.send_timeout) as stuck:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                raise ClientGone(f"connection broke: {e}") from None
        if stuck.cancelled_caught:
            raise ClientStuck(
                f"the client took nothing for {self.send_timeout:g} s: closing the connection")
        self.sent_bytes += len(data)

    async def send_parts(self, parts: Sequence[bytes | memoryview]) -> None:
        """Write ``parts`` back to back (N3, N2); :class:`ClientGone` if the socket broke."""
        stream = self.stream
        if not isinstance(stream, trio.SocketStream) or not hasattr(stream.socket, "sendmsg"):
            await self.send(b"".join(parts))
            return
        views = [memoryview(p).cast("B") for p in parts if len(p)]
        total = sum(len(v) for v in views)
        with trio.move_on_after(self.send_timeout) as stuck:
            try:
                first = 0
                while first < len(views):
                    sent = await stream.socket.sendmsg(views[first:first + _MAX_IOV])
                    # Drop what went out; a part sent in part stays as its tail.
                    while sent and sent >= len(views[first]):
                        sent -= len(views[first])
                        first += 1
                    if sent:
                        views[first] = views[first][sent:]
            except (OSError, trio.ClosedResourceError) as e:
                raise ClientGone(f"connection broke: {e}") from None
        if stuck.cancelled_caught:
            raise ClientStuck(
                f"the client took nothing for {self.send_timeout:g} s: closing the connection")
        self.sent_bytes += total
