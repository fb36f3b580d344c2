"""The ``WalStore`` interface and the position rules every implementation enforces.

Theory of operation: a store holds the WAL bytes of one timeline from ``start_lsn`` on.

1. Writes are strictly sequential: a write starts exactly at ``write_lsn`` (no rewrite, no
   gap). Writes are not durable until ``flush``.
2. ``flush_lsn <= write_lsn`` always; ``flush_lsn`` is durable: after a crash the store
   reopens with ``write_lsn == flush_lsn`` == the last flushed (or truncated-to) position,
   and bytes past it count as never written.
3. ``read`` serves only durable bytes (below ``flush_lsn``), never crossing a segment
   boundary, because its readers are WAL senders, which must never hand out WAL that a
   crash could take back.
4. ``truncate(lsn)`` is crash-safe and leaves ``write_lsn == flush_lsn == lsn``. While a
   truncation is pending (it failed half-way), writes and flushes are refused.
5. Nothing below ``start_lsn`` exists; asking for it is an error, not an empty answer.
6. ``remove_before(lsn)`` raises ``start_lsn`` to ``lsn`` (a segment start at or below
   ``flush_lsn``) and drops the whole segments below it, crash-safely: after a crash the
   store opens with its old start and every segment, or with the new start.
"""

from __future__ import annotations

from typing import Final, Protocol

from ..core import Lsn, StorageError

__all__ = [
    "MAX_SEG_SIZE",
    "MIN_SEG_SIZE",
    "WalStore",
    "check_digest_range",
    "check_readable",
    "check_truncate_target",
    "check_write_position",
    "readable_length",
    "validate_seg_size",
]

MIN_SEG_SIZE: Final = 1 << 20
MAX_SEG_SIZE: Final = 1 << 30


class WalStore(Protocol):
    """Durable WAL of one timeline. All methods block; callers serialise every call.

    Errors: ``StorageError`` for refused operations and I/O failures, ``CorruptionError``
    (a subclass) when on-disk data fails verification.
    """

    @property
    def seg_size(self) -> int:
        """Segment size in bytes: a power of two from 1 MiB to 1 GiB, fixed per timeline."""
        ...

    @property
    def start_lsn(self) -> Lsn:
        """Where this store's WAL begins; nothing below it can be read."""
        ...

    @property
    def write_lsn(self) -> Lsn:
        """End of the bytes written so far (durable or not)."""
        ...

    @property
    def flush_lsn(self) -> Lsn:
        """End of the durable bytes."""
        ...

    def write(self, lsn: Lsn, data: bytes) -> None:
        """Append ``data`` at ``lsn``, which must equal ``write_lsn``. Not durable yet.

        Raises ``StorageError`` on a rewrite or gap (naming both positions), while a
        truncation is pending, or on I/O failure.
        """
        ...

    def flush(self) -> Lsn:
        """Make everything written durable and record it; return the new ``flush_lsn``."""
        ...

    def truncate(self, lsn: Lsn) -> None:
        """Drop everything at and past ``lsn`` (crash-safe); then write = flush = ``lsn``.

        ``lsn`` must be within ``[start_lsn, write_lsn]``, else ``StorageError``.
        """
        ...

    def read(self, start: Lsn, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` durable bytes from ``start``, never crossing a segment.

        Returns ``b""`` when ``start >= flush_lsn`` (nothing durable there yet). Raises
        ``StorageError`` if ``start < start_lsn`` (the WAL is not available here) and
        ``ValueError`` if ``max_bytes <= 0``.
        """
        ...

    def remove_before(self, lsn: Lsn) -> int:
        """Remove the WAL below ``lsn`` (rule 6); return how many segment files went.

        A no-op (0) if ``lsn <= start_lsn``. Raises ``StorageError`` if ``lsn`` is not a
        segment start or lies beyond ``flush_lsn``, or on I/O failure (the store then
        starts either at its old start or at ``lsn``; ``start_lsn`` says which).
        """
        ...

    def digest(self, from_lsn: Lsn, until_lsn: Lsn) -> str:
        """Hex SHA-256 of the bytes in ``[from_lsn, until_lsn)``, which must lie within
        ``[start_lsn, flush_lsn]`` (else ``StorageError``)."""
        ...

    def close(self) -> None:
        """Release files. Unflushed bytes are not flushed: they count as never written."""
        ...


def validate_seg_size(seg_size: int) -> int:
    """Return ``seg_size`` if it is a power of two in [1 MiB, 1 GiB]; else ``ValueError``."""
    if not (MIN_SEG_SIZE <= seg_size <= MAX_SEG_SIZE) or seg_size & (seg_size - 1):
        raise ValueError(
            f"invalid WAL segment size {seg_size}: must be a power of two "
            f"from {MIN_SEG_SIZE} to {MAX_SEG_SIZE} bytes"
        )
    return seg_size


def check_write_position(lsn: Lsn, write_lsn: Lsn) -> None:
    """Rule 1: refuse a rewrite or a gap."""
    if lsn < write_lsn:
        raise StorageError(
            f"refusing to rewrite WAL: write at {lsn} but WAL is written up to {write_lsn}"
        )
    if lsn > write_lsn:
        raise StorageError(
            f"refusing to leave a gap in WAL: write at {lsn} but WAL is written "
            f"only up to {write_lsn}"
        )


def check_readable(start: Lsn, start_lsn: Lsn, max_bytes: int) -> None:
    """Rule 5 (and a sane ``max_bytes``)."""
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if start < start_lsn:
        raise StorageError(f"WAL at {start} is not available: this store starts at {start_lsn}")


def readable_length(start: Lsn, max_bytes: int, flush_lsn: Lsn, seg_size: int) -> int:
    """Rule 3: how many bytes a read at ``start`` may return."""
    if start >= flush_lsn:
        return 0
    to_segment_end = seg_size - start.segment_offset(seg_size)
    return min(max_bytes, int(flush_lsn) - int(start), to_segment_end)


def check_digest_range(from_lsn: Lsn, until_lsn: Lsn, start_lsn: Lsn, flush_lsn: Lsn) -> None:
    if not start_lsn <= from_lsn <= until_lsn <= flush_lsn:
        raise StorageError(
            f"cannot digest WAL [{from_lsn}, {until_lsn}): the durable WAL of this store is "
            f"[{start_lsn}, {flush_lsn})"
        )


def check_truncate_target(lsn: Lsn, start_lsn: Lsn, write_lsn: Lsn) -> None:
    if not start_lsn <= lsn <= write_lsn:
        raise StorageError(
            f"cannot truncate WAL at {lsn}: it must be within [{start_lsn}, {write_lsn}]"
        )
