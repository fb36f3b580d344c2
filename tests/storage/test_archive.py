"""Archive stores (rules A1-A4 of ``storage/_archive.py``): the file archive and the memory
twin; the S3 archive against a real server is in tests/integration/test_archive_s3.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from safekeeper_recovery.core import ArchiveCorrupted, ArchiveError, ArchiveObjectMissing
from safekeeper_recovery.storage import (
    Archive,
    FileArchive,
    MemoryArchive,
    open_archive,
    segment_key,
)
from safekeeper_recovery.testing import make_ttid

KEY = segment_key(make_ttid(1), 3, 1 << 20)
DATA = bytes(range(256)) * 4096


@pytest.fixture(params=["memory", "file"])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Archive:
    if request.param == "memory":
        return MemoryArchive()
    return open_archive(f"file://{tmp_path}")


def corrupt(archive: Archive, key: str, data: bytes) -> None:
    if isinstance(archive, MemoryArchive):
        archive.objects[key] = data
    else:
        assert isinstance(archive, FileArchive)
        (archive.root / key).write_bytes(data)


async def test_a1_put_returns_the_verified_record_and_get_the_same_bytes(
    archive: Archive,
) -> None:
    obj = await archive.put(KEY, DATA)
    assert (obj.key, obj.size, obj.sha256) == (KEY, len(DATA), hashlib.sha256(DATA).hexdigest())
    assert await archive.get(KEY) == DATA
    assert await archive.head(KEY) == obj
    assert await archive.list(KEY.rsplit("/", 1)[0] + "/") == [KEY]
    assert KEY.endswith("/000000010000000000000003")


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
async def test_a2_a_corrupted_or_truncated_object_is_never_served(
    archive: Archive, damage: str
) -> None:
    await archive.put(KEY, DATA)
    bad = DATA[:-1] if damage == "truncated" else b"\xff" + DATA[1:]
    corrupt(archive, KEY, bad)
    with pytest.raises(ArchiveCorrupted, match=r"truncated|corrupted"):
        await archive.get(KEY)


async def test_a2_a_missing_object_is_its_own_error(archive: Archive) -> None:
    with pytest.raises(ArchiveObjectMissing):
        await archive.get(KEY)
    assert await archive.head(KEY) is None
    assert await archive.list("no/such/") == []


async def test_a3_a_file_object_appears_only_with_its_record(tmp_path: Path) -> None:
    archive = FileArchive(tmp_path)
    await archive.put(KEY, DATA)
    names = sorted(p.name for p in (tmp_path / KEY).parent.iterdir())
    assert names == ["000000010000000000000003", "000000010000000000000003.sha256"]
    (tmp_path / (KEY + ".sha256")).unlink()
    with pytest.raises(ArchiveCorrupted, match="no checksum record"):
        await archive.get(KEY)


async def test_a4_a_missing_archive_directory_names_itself_and_is_not_created(
    tmp_path: Path,
) -> None:
    archive = open_archive(f"file://{tmp_path}/absent")
    for call in (archive.check(), archive.put(KEY, DATA), archive.get(KEY)):
        with pytest.raises(ArchiveError, match="does not exist") as info:
            await call
        assert info.value.kind == "unreachable"
    assert not (tmp_path / "absent").exists()


def test_archive_urls_are_checked_without_io() -> None:
    assert isinstance(open_archive("file:///srv/wal"), FileArchive)
    assert open_archive("s3://bucket/some/prefix", endpoint="http://127.0.0.1:1").url == (
        "s3://bucket/some/prefix")
    for bad in ("http://x/y", "file://", "s3:///prefix", "/srv/wal"):
        with pytest.raises(ValueError, match="unsupported archive URL"):
            open_archive(bad)
    with pytest.raises(ValueError, match="s3:// archives only"):
        open_archive("file:///srv/wal", endpoint="http://127.0.0.1:1")


async def test_a3_two_nodes_archiving_the_same_segment_at_once_both_succeed(
    tmp_path: Path,
) -> None:
    # Rule L1 allows two uploaders for a moment (peer info in flight): the file archive
    # must take concurrent puts of the same object, each whole.
    archives = [FileArchive(tmp_path), FileArchive(tmp_path)]
    for round_ in range(10):
        key = segment_key(make_ttid(2), round_, 1 << 20)
        async with trio.open_nursery() as nursery:
            for archive in archives:
                nursery.start_soon(archive.put, key, DATA)
        assert await archives[0].get(key) == DATA
    assert partials(tmp_path) == []


def partials(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*.partial")]
