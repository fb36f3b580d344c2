"""Control file stores: round trip, atomic replacement, and clear corruption errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from safekeeper_recovery.core import CorruptionError
from safekeeper_recovery.storage import (
    CONTROL_FILE_NAME,
    ControlFileStore,
    FileControlFileStore,
    MemoryControlFileStore,
)


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ControlFileStore:
    if request.param == "file":
        return FileControlFileStore(tmp_path)
    return MemoryControlFileStore()


def test_load_before_any_persist_returns_none(store: ControlFileStore) -> None:
    assert store.load() is None


def test_persist_then_load_returns_the_last_body(store: ControlFileStore) -> None:
    store.persist(b"first")
    store.persist(b"")
    assert store.load() == b""
    store.persist(bytes(range(256)) * 10)
    assert store.load() == bytes(range(256)) * 10


def test_file_persist_survives_a_new_instance_and_leaves_no_temporary(tmp_path: Path) -> None:
    FileControlFileStore(tmp_path).persist(b"state")
    assert FileControlFileStore(tmp_path).load() == b"state"
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONTROL_FILE_NAME]


def test_leftover_temporary_from_a_crashed_persist_is_ignored(tmp_path: Path) -> None:
    store = FileControlFileStore(tmp_path)
    store.persist(b"good")
    (tmp_path / (CONTROL_FILE_NAME + ".partial")).write_bytes(b"half-writ")
    assert store.load() == b"good"
    store.persist(b"better")
    assert store.load() == b"better"


def corrupt(path: Path, offset: int, xor: int = 0x01) -> None:
    image = bytearray(path.read_bytes())
    image[offset] ^= xor
    path.write_bytes(bytes(image))


def test_a_flipped_body_bit_is_a_checksum_mismatch_naming_the_file(tmp_path: Path) -> None:
    store = FileControlFileStore(tmp_path)
    store.persist(b"some state")
    corrupt(store.path, 14)
    with pytest.raises(CorruptionError, match=f"control file {store.path} checksum mismatch"):
        store.load()


@pytest.mark.parametrize(
    ("offset", "message"),
    [(0, "bad magic"), (4, "unsupported format version"), (8, "length mismatch")],
)
def test_header_damage_is_reported(tmp_path: Path, offset: int, message: str) -> None:
    store = FileControlFileStore(tmp_path)
    store.persist(b"some state")
    corrupt(store.path, offset)
    with pytest.raises(CorruptionError, match=message):
        store.load()


@pytest.mark.parametrize("keep", [0, 5, 15, 20])
def test_a_truncated_file_is_corruption(tmp_path: Path, keep: int) -> None:
    store = FileControlFileStore(tmp_path)
    store.persist(b"some state")
    store.path.write_bytes(store.path.read_bytes()[:keep])
    with pytest.raises(CorruptionError, match=str(store.path)):
        store.load()


def test_memory_store_counts_persists() -> None:
    store = MemoryControlFileStore()
    store.persist(b"a")
    store.persist(b"b")
    assert store.persist_count == 2
    assert store.load() == b"b"
