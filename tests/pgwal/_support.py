"""Shared helpers for the pgwal tests: who owns each byte of a synthetic run."""

from __future__ import annotations

from safekeeper_recovery.core import XLOG_BLCKSZ, Lsn
from safekeeper_recovery.pgwal import SyntheticWal
from safekeeper_recovery.pgwal._format import maxalign, page_header_size


def byte_owners(wal: SyntheticWal) -> list[tuple[str, int, int | None]]:
    """For every byte of the run: ``("page", page_lsn, record_in_progress)`` for page
    header bytes, ``("record", record_lsn, None)`` for a record's bytes and its padding."""
    start, end = int(wal.start_lsn), int(wal.end_lsn)
    owners: list[tuple[str, int, int | None]] = []
    records = iter(wal.record_lsns())
    pos = start
    current: tuple[int, int] | None = None  # (record start, padded bytes still to place)
    while pos < end:
        if pos % XLOG_BLCKSZ == 0:
            size = page_header_size(pos, wal.seg_size)
            in_progress = current[0] if current is not None else None
            owners.extend(("page", pos, in_progress) for _ in range(size))
            pos += size
            continue
        if current is None:
            lsn, tot_len = next(records)
            assert lsn == pos, (Lsn(lsn), Lsn(pos))
            current = (int(lsn), maxalign(tot_len))
        take = min(current[1], XLOG_BLCKSZ - pos % XLOG_BLCKSZ, end - pos)
        owners.extend(("record", current[0], None) for _ in range(take))
        pos += take
        current = (current[0], current[1] - take) if current[1] > take else None
    assert len(owners) == end - start
    return owners
