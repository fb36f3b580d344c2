"""The two-slot flush position file survives a torn slot write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safekeeper_recovery.core import CorruptionError, Lsn, StorageError
from safekeeper_recovery.storage._flush_position import FLUSH_POSITION_FILE_NAME, FlushPositionFile

SLOTS = (512, 1024)


def reopen(directory: Path) -> FlushPositionFile:
    f = FlushPositionFile.open(directory)
    assert f is not None
    return f


def test_missing_file_means_a_new_store(tmp_path: Path) -> None:
    assert FlushPositionFile.open(tmp_path) is None
    assert not FlushPositionFile.exists(tmp_path)


def test_create_records_start_and_seg_size(tmp_path: Path) -> None:
    FlushPositionFile.create(tmp_path, 1 << 20, Lsn(77)).close()
    f = reopen(tmp_path)
    assert (f.seg_size, f.start_lsn, f.lsn) == (1 << 20, 77, 77)
    f.close()
    with pytest.raises(StorageError, match="already exists"):
        FlushPositionFile.create(tmp_path, 1 << 20, Lsn(77))


def test_records_alternate_slots_and_the_newest_wins(tmp_path: Path) -> None:
    f = FlushPositionFile.create(tmp_path, 1 << 20, Lsn(0))
    for lsn in (10, 20, 30):
        f.record(Lsn(lsn))
    f.close()
    assert reopen(tmp_path).lsn == 30


def damage(directory: Path, offset: int) -> None:
    path = directory / FLUSH_POSITION_FILE_NAME
    image = bytearray(path.read_bytes())
    image[offset + 3] ^= 0xFF
    path.write_bytes(bytes(image))


def test_a_torn_newest_slot_falls_back_to_the_other(tmp_path: Path) -> None:
    f = FlushPositionFile.create(tmp_path, 1 << 20, Lsn(0))
    f.record(Lsn(10))  # slot 1 (slot 0 holds the start)
    f.record(Lsn(20))  # slot 0
    f.close()
    damage(tmp_path, SLOTS[0])
    f = reopen(tmp_path)
    assert f.lsn == 10
    f.record(Lsn(25))  # goes to the older (damaged) slot, keeping slot 1 intact
    f.close()
    assert reopen(tmp_path).lsn == 25


def test_both_slots_invalid_is_corruption(tmp_path: Path) -> None:
    f = FlushPositionFile.create(tmp_path, 1 << 20, Lsn(0))
    f.record(Lsn(10))
    f.close()
    damage(tmp_path, SLOTS[0])
    damage(tmp_path, SLOTS[1])
    with pytest.raises(CorruptionError, match="both slots"):
        FlushPositionFile.open(tmp_path)


def test_a_damaged_header_is_corruption(tmp_path: Path) -> None:
    FlushPositionFile.create(tmp_path, 1 << 20, Lsn(0)).close()
    damage(tmp_path, 4)
    with pytest.raises(CorruptionError, match="header checksum"):
        FlushPositionFile.open(tmp_path)


def test_a_truncated_file_is_corruption(tmp_path: Path) -> None:
    FlushPositionFile.create(tmp_path, 1 << 20, Lsn(0)).close()
    os.truncate(tmp_path / FLUSH_POSITION_FILE_NAME, 10)
    with pytest.raises(CorruptionError, match="truncated"):
        FlushPositionFile.open(tmp_path)
