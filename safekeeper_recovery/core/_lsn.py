"""Log sequence numbers: byte positions in the WAL stream (PostgreSQL ``XLogRecPtr``)."""

from __future__ import annotations

import re
from typing import Final, final

__all__ = ["INVALID_LSN", "Lsn", "MAX_LSN", "XLOG_BLCKSZ", "segment_file_name"]

XLOG_BLCKSZ: Final = 8192
_U32: Final = 0xFFFF_FFFF
_U64: Final = 0xFFFF_FFFF_FFFF_FFFF
_LSN_TEXT: Final = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


@final
class Lsn(int):
    """An unsigned 64-bit WAL position. ``Lsn(0)`` is INVALID ("not set").

    ``str()`` gives PostgreSQL's ``X/Y`` form (upper-case hex, no padding); ``parse`` is its
    strict inverse. Arithmetic that leaves the u64 range raises ``OverflowError``.
    """

    __slots__ = ()

    def __new__(cls, value: int = 0) -> Lsn:
        if not 0 <= value <= _U64:
            raise OverflowError(f"LSN out of u64 range: {value}")
        return super().__new__(cls, value)

    @classmethod
    def parse(cls, text: str) -> Lsn:
        """Parse ``X/Y`` (each part 1 to 8 hex digits, either case). Raise ``ValueError``."""
        # A compiled pattern: peers send thousands of these per batch.
        m = _LSN_TEXT.fullmatch(text.strip())
        if m is None:
            raise ValueError(f"invalid LSN {text!r}: expected X/Y with two hex u32 parts")
        return cls((int(m.group(1), 16) << 32) | int(m.group(2), 16))

    def __str__(self) -> str:
        return f"{int(self) >> 32:X}/{int(self) & _U32:X}"

    def __repr__(self) -> str:
        return f"Lsn({self})"

    def __add__(self, other: int) -> Lsn:
        return Lsn(int(self) + int(other))

    def __sub__(self, other: int) -> Lsn:
        return Lsn(int(self) - int(other))

    def segment_number(self, seg_size: int) -> int:
        """Index of the segment holding this position."""
        return int(self) // seg_size

    def segment_offset(self, seg_size: int) -> int:
        """Offset of this position inside its segment."""
        return int(self) % seg_size

    def segment_lsn(self, seg_size: int) -> Lsn:
        """Start of the segment holding this position."""
        return Lsn(int(self) - int(self) % seg_size)

    def block_offset(self) -> int:
        """Offset inside its 8 KiB WAL page."""
        return int(self) % XLOG_BLCKSZ


def segment_file_name(segno: int, seg_size: int, tli: int = 1) -> str:
    """PostgreSQL's 24-hex-digit segment file name for segment ``segno``."""
    per_xlogid = 0x1_0000_0000 // seg_size
    return f"{tli:08X}{segno // per_xlogid:08X}{segno % per_xlogid:08X}"


INVALID_LSN: Final = Lsn(0)
MAX_LSN: Final = Lsn(_U64)
