"""The deterministic WAL generator and append chunking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safekeeper_recovery.core import MAX_SEND_SIZE, Lsn
from safekeeper_recovery.proposer import BLOCK_SIZE, WalGenerator, chunk_end

SIZE = 3 * BLOCK_SIZE + 12345
WHOLE = WalGenerator(3, SIZE).read(0, SIZE)


def test_same_seed_same_bytes() -> None:
    assert WalGenerator(7, SIZE).read(0, SIZE) == WalGenerator(7, SIZE).read(0, SIZE)


def test_different_seeds_differ() -> None:
    assert WalGenerator(1, 4096).read(0, 4096) != WalGenerator(2, 4096).read(0, 4096)


@given(st.integers(0, SIZE), st.integers(0, SIZE))
def test_any_slice_matches_the_whole_stream(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    gen = WalGenerator(3, SIZE)
    assert gen.read(lo, hi - lo) == WHOLE[lo:hi]


def test_reading_past_the_end_is_an_error() -> None:
    with pytest.raises(ValueError, match="outside the stream"):
        WalGenerator(3, 10).read(5, 6)


@given(st.integers(0, 2**40), st.integers(0, 2**20))
def test_chunks_are_bounded_and_never_cross_an_aligned_boundary(lsn: int, length: int) -> None:
    end = int(chunk_end(Lsn(lsn), Lsn(lsn + length)))
    assert lsn <= end <= lsn + length
    assert end - lsn <= MAX_SEND_SIZE
    assert (end - 1) // MAX_SEND_SIZE == lsn // MAX_SEND_SIZE or end == lsn
    if length:
        assert end > lsn


def test_byte_i_depends_only_on_the_seed_and_i_not_on_the_stream_size() -> None:
    # A short stream draws only its own bytes, yet must be a prefix of a longer one.
    for size in (1, 3, 4, 4097, BLOCK_SIZE - 1, BLOCK_SIZE + 5):
        assert WalGenerator(3, size).read(0, size) == WHOLE[:size]
