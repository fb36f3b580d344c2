"""Fast paths for wsproto (the engine under trio-websocket) on megabyte WAL frames.

RFC 6455 makes every client→server frame masked: its payload XORed with a random 4-byte
key. wsproto does that in pure Python (four strided ``bytes.translate`` passes after a
copy), at a few hundred MB/s, and builds each outgoing frame with four more copies of the
payload (``bytearray(payload)`` twice, ``header + key + masked``, ``bytearray(...)``). On
the ingest path every byte is masked by the proposer, three times (once per node), and
unmasked by each node: the profile of ``propose`` to three nodes had wsproto's masker as
the largest single cost on both sides (30-47 % of the busy tasks), and, after that, frame
building as 13 % of the proposer.

* :class:`FastXorMasker` does the same XOR with numpy on 64-bit words, an order of
  magnitude faster, in place when handed a ``bytearray`` (wsproto only ever hands it a
  fresh copy it owns: a slice of its receive buffer, or of the payload being sent).
* :func:`serialize_frame` builds a large data frame in one buffer: header, key, and the
  payload masked straight into it (one pass over the payload instead of five).
* :func:`parse_header` makes the receiver wait for the whole payload of a data frame up
  to ``WHOLE_FRAME_LIMIT`` before handing it on, so a WAL message comes out as one event:
  wsproto otherwise emits a piece per network read, and trio-websocket joins the pieces
  (a copy of every byte, and two to three events per message, a twentieth of a node's
  CPU). Larger frames still stream piecewise, so trio-websocket's message size limit
  (1009) fires after the first piece as before, never after buffering a huge frame.
* :func:`connection_send` and :func:`ws_connection_send` hand that buffer on as is: wsproto
  appends it to ``b""`` on its way out (``data = b""; data += frame``), which copies a
  ``bytearray`` once more (the one copy left on the send path after the two above).

Both are byte-for-byte equivalent to wsproto's own (tests compare them on random keys,
lengths and chunkings, including the key rotation between chunks of one frame; the frame
builder with the same key). Smaller frames, control frames and frames of connections with
extensions (trio-websocket negotiates none) take wsproto's own code.

:func:`install` points wsproto's ``XorMaskerSimple`` name and
``FrameProtocol._serialize_frame`` at them; wsproto looks both up on every use, so this
changes no other behaviour. It is **opted into**, never done on import (a library must not
patch a process it is imported into): the CLI and ``serve_node`` call
``transport.enable_wsproto_fastpath()``; a library user may. It patches only the wsproto
releases it was written against (:data:`SUPPORTED_WSPROTO`); on any other, or when an
internal it replaces is missing, it leaves wsproto alone and says so: plain wsproto is
slower, never wrong. Idempotent. numpy is imported on the first payload worth it (a node
that only recovers or idles never loads it: 14 MiB of RSS).
"""

from __future__ import annotations

import logging
import os
import struct
from typing import Final

import wsproto
import wsproto.connection as _connection
import wsproto.frame_protocol as _frame_protocol
from wsproto.events import Event, Message
from wsproto.frame_protocol import FrameProtocol, Opcode, RsvBits

__all__ = ["SUPPORTED_WSPROTO", "WHOLE_FRAME_LIMIT", "FastXorMasker", "connection_send",
           "install", "installed", "parse_header", "serialize_frame", "ws_connection_send"]

SUPPORTED_WSPROTO: Final = ("1.2.", "1.3.")
"""wsproto releases whose internals the fast paths replace (checked before patching)."""

_ORIGINAL_MASKER: Final = _frame_protocol.XorMaskerSimple
_ORIGINAL_SERIALIZE: Final = FrameProtocol._serialize_frame
_ORIGINAL_CONNECTION_SEND: Final = _connection.Connection.send
_ORIGINAL_WS_CONNECTION_SEND: Final = wsproto.WSConnection.send
_SMALL: Final = 512
"""Payloads shorter than this are XORed byte by byte and framed by wsproto (control
frames, status updates)."""
_NO_RSV: Final = RsvBits(False, False, False)
_ORIGINAL_PARSE_HEADER: Final = _frame_protocol.FrameDecoder.parse_header
WHOLE_FRAME_LIMIT: Final = 2 << 20
"""Data frames up to this size are handed on whole: above every AppendRequest and WAL
message (1 MiB of WAL plus a header). Only a vote or greeting with a term history of
tens of thousands of entries is larger (``MAX_MESSAGE_SIZE``); it streams as before."""


def _xor_into(out: memoryview | bytearray, data: bytes | bytearray | memoryview,
              key: bytes) -> None:
    """``out[i] = data[i] ^ key[i % 4]`` for ``i < len(data)`` (``out`` may be ``data``)."""
    import numpy as np  # lazily: see the module docstring

    n = len(data)
    words = n // 8
    if words:
        np.bitwise_xor(
            np.frombuffer(data, dtype=np.uint64, count=words),
            np.frombuffer(key * 2, dtype=np.uint64)[0],
            out=np.frombuffer(out, dtype=np.uint64, count=words),
        )
    for i in range(words * 8, n):
        out[i] = data[i] ^ key[i & 3]


class FastXorMasker:
    """Drop-in for ``wsproto.frame_protocol.XorMaskerSimple`` (same interface and output)."""

    __slots__ = ("_key",)

    def __init__(self, masking_key: bytearray | bytes) -> None:
        if len(masking_key) != 4:
            raise ValueError(f"a masking key has 4 bytes, not {len(masking_key)}")
        self._key = bytes(masking_key)

    def process(self, data: bytearray | bytes) -> bytearray:
        """``data`` XOR the key (continuing the key where the previous chunk ended).

        A ``bytearray`` is masked in place and returned (wsproto passes only fresh copies);
        ``bytes`` are copied.
        """
        n = len(data)
        key = self._key
        out = data if isinstance(data, bytearray) else bytearray(data)
        if n < _SMALL:
            for i in range(n):
                out[i] ^= key[i & 3]
        else:
            _xor_into(out, out, key)
        rotation = n % 4
        self._key = key[rotation:] + key[:rotation]
        return out


def serialize_frame(
    self: FrameProtocol, opcode: Opcode, payload: bytes | bytearray = b"", fin: bool = True
) -> bytearray:
    """Drop-in for ``FrameProtocol._serialize_frame``: a large data frame in one buffer."""
    n = len(payload)
    if n < _SMALL or self.extensions or opcode.iscontrol():
        return _ORIGINAL_SERIALIZE(self, opcode, payload, fin)
    mask_bit = 0x80 if self.client else 0
    first = self._make_fin_rsv_opcode(fin, _NO_RSV, opcode)
    if n <= 0xFFFF:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    h = len(header)
    if not self.client:
        out = bytearray(h + n)
        out[:h] = header
        out[h:] = payload
        return out
    # RFC 6455 5.3: a fresh, unpredictable key per frame (wsproto uses the same source).
    key = os.urandom(4)
    out = bytearray(h + 4 + n)
    out[:h] = header
    out[h:h + 4] = key
    with memoryview(out) as view:
        _xor_into(view[h + 4:], payload, key)
    return out


def parse_header(self: _frame_protocol.FrameDecoder) -> bool:
    """Drop-in for ``FrameDecoder.parse_header``: a data frame up to ``WHOLE_FRAME_LIMIT``
    is only processed once its whole payload is buffered (``payload_required``, which
    wsproto already uses for control frames)."""
    if not _ORIGINAL_PARSE_HEADER(self):
        return False
    header = self.header
    assert header is not None
    if not self.extensions and header.payload_len <= WHOLE_FRAME_LIMIT:
        self.payload_required = header.payload_len
    return True


def connection_send(self: _connection.Connection, event: Event) -> bytes:
    """Drop-in for ``wsproto.connection.Connection.send``: a data message's frame as built."""
    if isinstance(event, Message) and self.state == _connection.ConnectionState.OPEN:
        # bytes-like for the caller (trio-websocket sends it); not copied into a bytes.
        frame: bytes = self._proto.send_data(event.data, event.message_finished)  # type: ignore[assignment]
        return frame
    return _ORIGINAL_CONNECTION_SEND(self, event)


def ws_connection_send(self: wsproto.WSConnection, event: Event) -> bytes:
    """Drop-in for ``wsproto.WSConnection.send``: an open connection's frame as built."""
    if self.connection is None:
        return _ORIGINAL_WS_CONNECTION_SEND(self, event)
    return self.connection.send(event)


def installed() -> bool:
    """Whether wsproto currently uses the fast paths."""
    masker: object = _frame_protocol.XorMaskerSimple
    return masker is FastXorMasker


def install() -> bool:
    """Make wsproto mask, unmask and frame with the fast paths above (process-wide).

    Returns whether they are in place: ``False`` (wsproto untouched, a warning logged) on a
    wsproto release other than :data:`SUPPORTED_WSPROTO` or without the internals replaced.
    """
    if installed():
        return True
    version = getattr(wsproto, "__version__", "")
    internals = (
        hasattr(_frame_protocol, "XorMaskerSimple")
        and hasattr(FrameProtocol, "_serialize_frame")
        and hasattr(_frame_protocol.FrameDecoder, "parse_header")
        and hasattr(_connection.Connection, "send")
    )
    if not version.startswith(SUPPORTED_WSPROTO) or not internals:
        logging.getLogger(__name__).warning(
            "wsproto %s is not one the WebSocket fast path was written for (%s): using "
            "plain wsproto (correct, slower)", version or "(unknown)",
            ", ".join(f"{v}x" for v in SUPPORTED_WSPROTO))
        return False
    _frame_protocol.XorMaskerSimple = FastXorMasker  # type: ignore[misc, assignment]  # a drop-in
    FrameProtocol._serialize_frame = serialize_frame  # type: ignore[method-assign]
    _frame_protocol.FrameDecoder.parse_header = parse_header  # type: ignore[method-assign]
    _connection.Connection.send = connection_send  # type: ignore[method-assign]
    wsproto.WSConnection.send = ws_connection_send  # type: ignore[method-assign]
    return True


def original_masker() -> type:
    """wsproto's own masker class (what :func:`install` replaced), for tests."""
    return _ORIGINAL_MASKER


def original_serialize_frame() -> object:
    """wsproto's own frame builder (what :func:`install` replaced), for tests."""
    return _ORIGINAL_SERIALIZE
