"""Identifiers: tenant and timeline ids (16 bytes, 32 hex digits) and node ids (u64)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Self, final

import attrs

__all__ = ["NodeId", "TenantId", "TenantTimelineId", "TimelineId"]

_HEX = frozenset("0123456789abcdefABCDEF")


class _HexId:
    """16 random bytes shown as 32 lower-case hex digits. Parsing is strict."""

    __slots__ = ("_raw",)
    _raw: bytes

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 16:
            raise ValueError(f"{type(self).__name__} needs 16 bytes, got {len(raw)}")
        object.__setattr__(self, "_raw", bytes(raw))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse exactly 32 hex digits (either case). Raise ``ValueError`` otherwise.

        Strictness matters: ids become directory names, so ``../`` or stray characters must
        never get through.
        """
        if len(text) != 32 or not all(c in _HEX for c in text):
            raise ValueError(f"invalid {cls.__name__} {text!r}: expected 32 hex digits")
        return cls(bytes.fromhex(text))

    @classmethod
    def generate(cls, randbytes: Callable[[int], bytes]) -> Self:
        """A new random id from ``randbytes(16)`` (pass ``os.urandom`` or
        ``secrets.token_bytes``): the core takes randomness as an argument, never a source."""
        return cls(randbytes(16))

    @property
    def raw(self) -> bytes:
        return self._raw

    def __str__(self) -> str:
        return self._raw.hex()

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self}')"

    def __eq__(self, other: object) -> bool:
        # A TenantId never equals a TimelineId, even with the same bytes.
        return isinstance(other, _HexId) and type(other) is type(self) and other._raw == self._raw

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, _HexId) or type(other) is not type(self):
            return NotImplemented
        return self._raw < other._raw

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._raw))


@final
class TenantId(_HexId):
    """A tenant's id."""

    __slots__ = ()


@final
class TimelineId(_HexId):
    """A timeline's id (unique within its tenant)."""

    __slots__ = ()


@final
class NodeId(int):
    """A safekeeper's unique u64 id; displays in decimal."""

    __slots__ = ()

    def __new__(cls, value: int) -> NodeId:
        if not 0 <= value <= 0xFFFF_FFFF_FFFF_FFFF:
            raise ValueError(f"node id out of u64 range: {value}")
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return f"NodeId({int(self)})"

    def __str__(self) -> str:
        # int's str() defers to __repr__, so without this a log line would say "NodeId(3)".
        return int.__repr__(self)


@final
@attrs.frozen(order=True)
class TenantTimelineId:
    """A (tenant, timeline) pair; displays as ``<tenant>/<timeline>``."""

    tenant_id: TenantId
    timeline_id: TimelineId

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.timeline_id}"
