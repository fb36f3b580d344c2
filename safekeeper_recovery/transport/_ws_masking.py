"""Fast WebSocket masking for wsproto (the engine under trio-websocket).

RFC 6455 makes every client→server frame masked: its payload XORed with a random 4-byte
key. wsproto does that in pure Python (four strided ``bytes.translate`` passes after a
copy), at a few hundred MB/s. On the ingest path every byte is masked by the proposer and
unmasked by the node: the profile of ``propose`` to three nodes had wsproto's masker as
the largest single cost on both sides (30-47 % of the busy tasks). :class:`FastXorMasker`
does the same XOR with numpy on 32-bit words, an order of magnitude faster, and is
byte-for-byte equivalent (a test compares it with wsproto's own masker on random keys,
lengths and chunkings, including the key rotation between chunks of one frame).

:func:`install` points wsproto's ``XorMaskerSimple`` name at it; wsproto looks the name up
each time it builds a masker (``FrameDecoder`` for received masked frames,
``FrameProtocol._serialize_frame`` for sent ones), so this changes no other behaviour.
The transport modules install it on import. Idempotent. numpy is imported on the first
payload worth it (a node that only recovers or idles never loads it: 14 MiB of RSS).
"""

from __future__ import annotations

from typing import Final

import wsproto.frame_protocol as _frame_protocol

__all__ = ["FastXorMasker", "install"]

_ORIGINAL: Final = _frame_protocol.XorMaskerSimple
_SMALL: Final = 512
"""Payloads shorter than this are XORed byte by byte (control frames, status updates)."""


class FastXorMasker:
    """Drop-in for ``wsproto.frame_protocol.XorMaskerSimple`` (same interface and output)."""

    __slots__ = ("_key",)

    def __init__(self, masking_key: bytearray | bytes) -> None:
        if len(masking_key) != 4:
            raise ValueError(f"a masking key has 4 bytes, not {len(masking_key)}")
        self._key = bytes(masking_key)

    def process(self, data: bytearray | bytes) -> bytearray:
        """``data`` XOR the key (continuing the key where the previous chunk ended)."""
        n = len(data)
        key = self._key
        if n < _SMALL:
            out = bytearray(data)
            for i in range(n):
                out[i] ^= key[i & 3]
        else:
            import numpy as np  # lazily: see the module docstring

            out = bytearray(n)
            words = n // 4
            np.bitwise_xor(
                np.frombuffer(data, dtype=np.uint32, count=words),
                np.frombuffer(key, dtype=np.uint32)[0],
                out=np.frombuffer(out, dtype=np.uint32, count=words),
            )
            for i in range(words * 4, n):
                out[i] = data[i] ^ key[i & 3]
        rotation = n % 4
        self._key = key[rotation:] + key[:rotation]
        return out


def install() -> None:
    """Make wsproto mask and unmask with :class:`FastXorMasker` (process-wide)."""
    _frame_protocol.XorMaskerSimple = FastXorMasker  # type: ignore[misc, assignment]  # a drop-in


def original_masker() -> type:
    """wsproto's own masker class (what :func:`install` replaced), for tests."""
    return _ORIGINAL
