"""continue_synthetic: WAL that continues earlier runs wherever they were cut (rules C1-C3
of ``pgwal/_continuation.py``; finding F1 of the fault campaign)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.pgwal import (
    CLEAN_STEP,
    DEFAULT_SYSTEM_ID,
    ContinuedWal,
    SyntheticWal,
    continue_synthetic,
    verify_chunks,
)
from safekeeper_recovery.testing import MiB

START = Lsn(0x100_0000)


def runs_cut_at(seed: int, size: int, cuts: list[int]) -> tuple[bytes, list[Lsn]]:
    """What a timeline holds after one proposer per entry of ``cuts`` wrote ``size`` bytes
    each and died ``cut`` bytes into its run (the last one is not cut): the WAL, and the
    term starts."""
    starts = [START]
    wal = b""
    for cut in [*cuts, None]:
        run = continue_synthetic(seed, size, starts[-1], starts, seg_size=MiB,
                                 system_id=DEFAULT_SYSTEM_ID)
        take = run.size if cut is None else min(cut, run.size)
        wal += run.read(0, take)
        starts.append(Lsn(starts[-1] + take))
    return wal, starts


def assert_valid(wal: bytes) -> None:
    report = verify_chunks([wal], START, Lsn(START + len(wal)), MiB,
                           system_id=DEFAULT_SYSTEM_ID, prev_lsn=Lsn(0))
    assert report.ok, report.summary()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 1000),
    size=st.integers(1, 400_000),
    cuts=st.lists(st.integers(0, 400_000), max_size=4),
)
def test_wal_cut_anywhere_and_continued_is_valid(seed: int, size: int, cuts: list[int]) -> None:
    wal, _ = runs_cut_at(seed, size, cuts)
    assert_valid(wal)


@pytest.mark.parametrize("cut", [1, 8, 23, 24, 40, 100, 8192 + 3])
def test_a_run_cut_inside_a_completion_is_continued_too(cut: int) -> None:
    """The second proposer dies while still completing the first one's torn record: the
    third completes the same record from further on (C2 recursively)."""
    first_cut = CLEAN_STEP - 20_000 - 5  # well inside a 64 KiB block, mid-record
    wal, starts = runs_cut_at(7, 200_000, [first_cut, cut])
    second = continue_synthetic(7, 200_000, starts[1], starts[:2], seg_size=MiB,
                                system_id=DEFAULT_SYSTEM_ID)
    assert isinstance(second, ContinuedWal)
    assert len(second.completion) > cut, "the second run was not cut inside its completion"
    assert_valid(wal)


def test_runs_end_at_clean_points_and_chain_across_seeds() -> None:
    """C1: an uncut run ends at the first multiple of 64 KiB at or after its size, so a run
    with another seed continues it through the trailer."""
    first = continue_synthetic(1, 100_000, START, [START], seg_size=MiB,
                               system_id=DEFAULT_SYSTEM_ID)
    assert first.end_lsn == START + 2 * CLEAN_STEP
    assert continue_synthetic(1, 4 * MiB, START, [START], seg_size=MiB,
                              system_id=DEFAULT_SYSTEM_ID).size == 4 * MiB
    second = continue_synthetic(2, 300_000, first.end_lsn, [START, first.end_lsn],
                                seg_size=MiB, system_id=DEFAULT_SYSTEM_ID)
    assert isinstance(second, SyntheticWal)
    assert_valid(first.read(0, first.size) + second.read(0, second.size))


def test_a_torn_start_completes_the_record_then_goes_on() -> None:
    wal, starts = runs_cut_at(3, 300_000, [100_001])
    first_end = starts[1]
    run = continue_synthetic(3, 300_000, first_end, starts[:2], seg_size=MiB,
                             system_id=DEFAULT_SYSTEM_ID)
    assert isinstance(run, ContinuedWal)
    assert 0 < len(run.completion) <= 64 * 1024
    assert run.read(0, run.size) == wal[first_end - START :]
    assert run.end_lsn % CLEAN_STEP == 0


def test_a_larger_run_is_the_same_wal_up_to_each_clean_point() -> None:
    """S5's prefix property, which C2's regeneration relies on."""
    short = SyntheticWal(4, START, 3 * CLEAN_STEP, seg_size=MiB, clean_step=CLEAN_STEP)
    long = SyntheticWal(4, START, 20 * CLEAN_STEP, seg_size=MiB, clean_step=CLEAN_STEP)
    assert long.read(0, short.size) == short.read(0, short.size)
