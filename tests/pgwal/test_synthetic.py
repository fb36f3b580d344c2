"""SyntheticWal: deterministic, random access, record-aligned ends (rules S1-S4)."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safekeeper_recovery.core import XLOG_BLCKSZ, Lsn
from safekeeper_recovery.pgwal import (
    TRAILER_SIZE,
    SyntheticWal,
    continuation_prev_lsn,
    verify_chunks,
)
from safekeeper_recovery.testing import MiB

from ._support import byte_owners

START = Lsn(0x100_0000)


def whole(wal: SyntheticWal) -> bytes:
    return wal.read(0, wal.size)


def test_same_inputs_same_bytes_other_seed_other_bytes() -> None:
    a = whole(SyntheticWal(5, START, 300_000, seg_size=MiB))
    assert a == whole(SyntheticWal(5, START, 300_000, seg_size=MiB))
    assert a != whole(SyntheticWal(6, START, 300_000, seg_size=MiB))


@cache
def reference() -> bytes:
    return whole(SyntheticWal(3, START - 200_000, 2 * MiB + 5000, seg_size=MiB))


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_random_access_reads_match_one_sequential_read(data: st.DataObject) -> None:
    wal = SyntheticWal(3, START - 200_000, 2 * MiB + 5000, seg_size=MiB)
    full = reference()
    for _ in range(4):
        offset = data.draw(st.integers(0, wal.size))
        length = data.draw(st.integers(0, wal.size - offset))
        assert wal.read(offset, length) == full[offset : offset + length]


def test_reading_outside_the_run_is_an_error() -> None:
    wal = SyntheticWal(1, START, 10_000, seg_size=MiB)
    with pytest.raises(ValueError, match="outside the stream"):
        wal.read(wal.size - 8, 16)


@pytest.mark.parametrize("size", [MiB, 3 * MiB + 8192 * 7, 123_456 - 123_456 % 8, 4096])
def test_aligned_sizes_are_written_exactly(size: int) -> None:
    wal = SyntheticWal(2, START, size, seg_size=MiB)
    assert wal.size == size
    assert wal.end_lsn == START + size


@settings(max_examples=200, deadline=None)
@given(start_page=st.integers(0, 300), start_off=st.integers(0, 1023), size=st.integers(0, 40_000))
def test_size_rounds_down_to_a_valid_end(start_page: int, start_off: int, size: int) -> None:
    start = START - 150 * XLOG_BLCKSZ + start_page * XLOG_BLCKSZ + start_off * 8
    in_header = 0 < start % XLOG_BLCKSZ < (40 if start % MiB < XLOG_BLCKSZ else 24)
    if in_header:
        with pytest.raises(ValueError, match="inside a page header"):
            SyntheticWal(1, Lsn(start), size, seg_size=MiB)
        return
    wal = SyntheticWal(1, Lsn(start), size, seg_size=MiB, prev_lsn=Lsn(start - TRAILER_SIZE))
    assert 0 <= wal.size <= size
    assert size - wal.size < 8 + 64 + 24 or wal.size == 0  # S2: at most a few dozen less
    report = verify_chunks([whole(wal)], wal.start_lsn, wal.end_lsn, MiB,
                           prev_lsn=Lsn(start - TRAILER_SIZE))
    assert report.ok, report.summary()
    if wal.size:
        assert report.last_record_lsn == wal.last_record_lsn == wal.end_lsn - TRAILER_SIZE


def test_start_must_be_aligned_and_outside_page_headers() -> None:
    with pytest.raises(ValueError, match="not 8-aligned"):
        SyntheticWal(1, START + 4, 100)
    with pytest.raises(ValueError, match="inside a page header"):
        SyntheticWal(1, START + 16, 100)  # a long header: 40 bytes at a segment start
    with pytest.raises(ValueError, match="power of two"):
        SyntheticWal(1, START, 100, seg_size=3 * MiB)


def test_records_continue_across_pages_and_segments() -> None:
    wal = SyntheticWal(4, START, 3 * MiB, seg_size=MiB)
    records = list(wal.record_lsns())
    crossing = [(lsn, n) for lsn, n in records if lsn % XLOG_BLCKSZ + n > XLOG_BLCKSZ]
    assert len(crossing) > len(records) // 4
    assert any(lsn % MiB + n > MiB for lsn, n in crossing)  # across a segment boundary
    assert max(n for _, n in records) > 2 * XLOG_BLCKSZ  # some span several pages
    small = SyntheticWal(4, START, 100_000, seg_size=MiB)
    owners = byte_owners(small)
    assert any(kind == "page" and rec is not None for kind, _, rec in owners)


def test_the_trailer_makes_the_previous_record_of_a_continuation_known() -> None:
    assert continuation_prev_lsn(START, START) == 0
    first = SyntheticWal(8, START, 500_000, seg_size=MiB)
    prev = continuation_prev_lsn(first.end_lsn, START)
    assert prev == first.last_record_lsn
    second = SyntheticWal(9, first.end_lsn, 700_000, seg_size=MiB, prev_lsn=prev)
    both = whole(first) + whole(second)
    report = verify_chunks([both], START, second.end_lsn, MiB, prev_lsn=Lsn(0))
    assert report.ok, report.summary()
    assert report.records == len(list(first.record_lsns())) + len(list(second.record_lsns()))
