"""Recovery beyond the horizon with real node processes: a node is down while the others
archive and remove the WAL it needs (a short ``--wal-peer-hold``); restarted, it catches up
without operator action because its donors serve the removed part from the archive
(``file://`` and a real SeaweedFS ``s3://``), with digests equal to the archive's objects
and to the donors' WAL."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.storage import segment_key
from safekeeper_recovery.testing import SEG_SIZE, make_ttid, wait_until

from .archive_support import lifecycle_of
from .conftest import ClusterFactory
from .recovery_support import propose_args
from .seaweedfs import S3Server

pytestmark = pytest.mark.slow

_prefixes = itertools.count(1)


def file_archive(tmp_path: Path) -> tuple[list[str], Callable[[str], Awaitable[bytes]]]:
    root = tmp_path / "archive"
    root.mkdir()

    async def read(key: str) -> bytes:
        return (root / key).read_bytes()

    return ["--archive", f"file://{root}"], read


def s3_archive(server: S3Server, monkeypatch: pytest.MonkeyPatch,
               ) -> tuple[list[str], Callable[[str], Awaitable[bytes]]]:
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)  # the nodes inherit them
    prefix = f"catchup{next(_prefixes)}"
    client = server.client()

    async def read(key: str) -> bytes:
        body: bytes = client.get_object(Bucket=server.bucket, Key=f"{prefix}/{key}")["Body"].read()
        return body

    return ["--archive", f"s3://{server.bucket}/{prefix}",
            "--archive-endpoint", server.endpoint], read


@pytest.mark.parametrize("kind", ["file", "s3"])
async def test_a_node_down_past_the_peer_hold_catches_up_through_the_archive(
    make_cluster: ClusterFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest, kind: str,
) -> None:
    archive, read_object = (file_archive(tmp_path) if kind == "file" else
                            s3_archive(request.getfixturevalue("seaweedfs"), monkeypatch))
    cluster = make_cluster(3, extra_args=[*archive, "--wal-peer-hold", "1s"])
    # Node 3 keeps what it receives (keep size), so its copy can be compared afterwards.
    cluster[3].extra_args += ["--wal-keep-size", "64MiB"]
    await cluster.start()
    ttid = make_ttid(61 if kind == "file" else 62)
    await cluster.create_timeline(ttid)
    result = await cluster.propose(*propose_args(cluster, ttid, "1MiB"))
    assert result.returncode == 0, result.stderr
    end = await cluster.flush_lsn(1, ttid)

    async def node_3_has_it() -> bool:
        return await cluster.flush_lsn(3, ttid) == end

    await wait_until(node_3_has_it, 30, message=f"node 3 flushed up to {end}")
    behind = end

    await cluster[3].kill()
    result = await cluster.propose(*propose_args(cluster, ttid, "5MiB", ids=[1, 2]))
    assert result.returncode == 0, result.stderr
    commit = await cluster.commit_lsn(1, ttid)
    archived_end = Lsn(int(commit) - int(commit) % SEG_SIZE)
    assert archived_end >= behind + 4 * SEG_SIZE

    async def removed_past_node_3() -> bool:
        states = [await lifecycle_of(cluster, n, ttid) for n in (1, 2)]
        return all(s["removal_horizon"] == str(archived_end) for s in states)

    # Node 3 has been silent for longer than the hold: its WAL is no longer kept for it.
    await wait_until(removed_past_node_3, 60,
                     message=f"nodes 1 and 2 archived and removed their WAL up to {archived_end}")

    await cluster[3].start()
    flush = await cluster.flush_lsn(1, ttid)

    async def caught_up() -> bool:
        return await cluster.flush_lsn(3, ttid) == flush

    await wait_until(caught_up, 60, message=f"node 3 caught up from {behind} to {flush} "
                                            "although its donors removed that WAL")
    # What came from the archive equals the archive's objects, segment by segment ...
    first_missing = behind // SEG_SIZE
    for segno in range(first_missing, archived_end // SEG_SIZE):
        key = segment_key(ttid, segno, SEG_SIZE)
        obj = await read_object(key)
        digest = await cluster.digest(3, ttid, Lsn(max(segno * SEG_SIZE, int(behind))),
                                      Lsn((segno + 1) * SEG_SIZE))
        offset = max(0, int(behind) - segno * SEG_SIZE)
        assert hashlib.sha256(obj[offset:]).hexdigest() == digest, key
    # ... and what the donors still hold equals their copy.
    if flush > archived_end:
        for donor in (1, 2):
            assert await cluster.digest(3, ttid, archived_end, flush) == await cluster.digest(
                donor, ttid, archived_end, flush)
    # The recovering node saw nothing go wrong on its way.
    status = await cluster.timeline_status(3, ttid)
    assert status.flush_lsn == flush


async def test_a_damaged_archived_segment_is_never_served_and_a_repaired_one_is(
    make_cluster: ClusterFactory, tmp_path: Path,
) -> None:
    archive, _ = file_archive(tmp_path)
    root = tmp_path / "archive"
    cluster = make_cluster(3, extra_args=[*archive, "--wal-peer-hold", "1s"])
    cluster[3].extra_args += ["--wal-keep-size", "64MiB"]
    await cluster.start()
    ttid = make_ttid(63)
    await cluster.create_timeline(ttid)
    result = await cluster.propose(*propose_args(cluster, ttid, "1MiB"))
    assert result.returncode == 0, result.stderr
    end = await cluster.flush_lsn(1, ttid)

    async def node_3_has_it() -> bool:
        return await cluster.flush_lsn(3, ttid) == end

    await wait_until(node_3_has_it, 30, message=f"node 3 flushed up to {end}")
    await cluster[3].kill()
    result = await cluster.propose(*propose_args(cluster, ttid, "4MiB", ids=[1, 2]))
    assert result.returncode == 0, result.stderr
    commit = await cluster.commit_lsn(1, ttid)
    archived_end = Lsn(int(commit) - int(commit) % SEG_SIZE)

    async def removed_past_node_3() -> bool:
        states = [await lifecycle_of(cluster, n, ttid) for n in (1, 2)]
        return all(s["removal_horizon"] == str(archived_end) for s in states)

    await wait_until(removed_past_node_3, 60,
                     message=f"nodes 1 and 2 archived and removed their WAL up to {archived_end}")
    # The second segment node 3 needs is damaged behind its recorded checksum.
    damaged = Lsn((end // SEG_SIZE + 1) * SEG_SIZE)
    obj = root / segment_key(ttid, damaged // SEG_SIZE, SEG_SIZE)
    good = obj.read_bytes()
    obj.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))

    await cluster[3].start()

    async def refused() -> bool:
        recovery = (await cluster.timeline_status(3, ttid)).recovery
        return "archive corrupt" in (recovery.last_error or "")

    await wait_until(refused, 60, message="node 3's recovery reports the corrupt object")
    # Not a byte of the damaged segment reached node 3 (what came before it may or may
    # not have been flushed when the attempt ended: an attempt that fails flushes nothing
    # more).
    assert end <= await cluster.flush_lsn(3, ttid) <= damaged
    recovery = (await cluster.timeline_status(3, ttid)).recovery
    assert "4011" in (recovery.last_error or ""), recovery

    # Repaired (re-archived as it was), the next attempt goes through by itself.
    obj.write_bytes(good)
    flush = await cluster.flush_lsn(1, ttid)

    async def caught_up() -> bool:
        return await cluster.flush_lsn(3, ttid) == flush

    await wait_until(caught_up, 90, message="node 3 caught up once the object was repaired")
    digest = await cluster.digest(3, ttid, damaged, Lsn(damaged + SEG_SIZE))
    assert digest == hashlib.sha256(good).hexdigest()
