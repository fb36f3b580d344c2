"""Real processes, ``file://`` archive: three nodes archive and remove WAL, the archive
holds every segment byte for byte, a killed node reloads, and ``restore-wal`` serves
PostgreSQL's ``restore_command`` from the archive."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from safekeeper_recovery.core import Lsn, TenantTimelineId, WalData
from safekeeper_recovery.storage import segment_key
from safekeeper_recovery.testing import (
    DEFAULT_START_LSN,
    SEG_SIZE,
    Cluster,
    make_ttid,
    run_cli,
    wait_until,
)
from safekeeper_recovery.transport import WalStreamClosed, open_wal_stream

from .archive_support import lifecycle_of
from .conftest import ClusterFactory
from .metrics_support import metric
from .recovery_support import propose_args

pytestmark = pytest.mark.slow


def segment_files(cluster: Cluster, node: int, ttid: TenantTimelineId) -> list[str]:
    directory = cluster[node].data_dir / str(ttid.tenant_id) / str(ttid.timeline_id)
    return sorted(p.name for p in directory.iterdir() if p.name[:1] == "0")


async def test_three_nodes_archive_every_committed_segment_and_remove_it_from_disk(
    make_cluster: ClusterFactory, tmp_path: Path,
) -> None:
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    url = f"file://{archive_dir}"
    cluster = make_cluster(3, extra_args=["--archive", url])
    # Node 3 keeps 64 MiB behind its flush position: its copy is what the archive must equal.
    cluster[3].extra_args += ["--wal-keep-size", "64MiB"]
    await cluster.start()
    ttid = make_ttid(14)
    await cluster.create_timeline(ttid)
    result = await cluster.propose(*propose_args(cluster, ttid, "6MiB"))
    assert result.returncode == 0, result.stderr
    commit = await cluster.commit_lsn(1, ttid)
    archived_end = Lsn(int(commit) - int(commit) % SEG_SIZE)
    assert archived_end >= DEFAULT_START_LSN + 5 * SEG_SIZE

    async def settled() -> bool:
        uploaders = set()
        for node in (1, 2, 3):
            lc = await lifecycle_of(cluster, node, ttid)
            horizon = DEFAULT_START_LSN if node == 3 else archived_end
            if (lc["backup_lsn"], lc["removal_horizon"]) != (str(archived_end), str(horizon)):
                return False
            uploaders.add(lc["uploader"])
        return len(uploaders) == 1  # every node names the same uploader (rule L1)

    await wait_until(settled, 30, message="every node archived (1, 2: and removed) its WAL "
                                          "and names the same uploader")
    statuses = [await lifecycle_of(cluster, n, ttid) for n in (1, 2, 3)]
    assert sum(int(str(s["uploaded_segments"])) for s in statuses) >= 5

    # The archive holds exactly what the nodes held (node 3 kept its copy).
    for segno in range(DEFAULT_START_LSN // SEG_SIZE, archived_end // SEG_SIZE):
        obj = archive_dir / segment_key(ttid, segno, SEG_SIZE)
        node_digest = await cluster.digest(3, ttid, Lsn(segno * SEG_SIZE),
                                           Lsn((segno + 1) * SEG_SIZE))
        assert hashlib.sha256(obj.read_bytes()).hexdigest() == node_digest, obj.name
    # Nodes 1 and 2 hold at most the segment being written (none when the WAL ends at a
    # segment boundary); node 3 every one.
    for node in (1, 2):
        assert len(segment_files(cluster, node, ttid)) <= 1, segment_files(cluster, node, ttid)
    assert len(segment_files(cluster, 3, ttid)) >= 6

    # Prometheus: the uploads and removals were counted, no failure.
    uploaded = 0.0
    for node in (1, 2, 3):
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{cluster[node].http_url}/metrics")).text
        uploaded += metric(text, "safekeeper_archive_upload_bytes_total")
        assert metric(text, "safekeeper_archive_failures_total") == 0
        removed = metric(text, "safekeeper_wal_removed_segments_total")
        assert removed == (0 if node == 3 else (archived_end - DEFAULT_START_LSN) // SEG_SIZE), (
            node, removed)
    assert uploaded >= int(archived_end) - int(DEFAULT_START_LSN)

    async with httpx.AsyncClient() as http:
        gone = await http.get(
            f"{cluster[1].http_url}/v1/tenant/{ttid.tenant_id}/timeline/{ttid.timeline_id}"
            f"/digest", params={"from_lsn": str(DEFAULT_START_LSN),
                                "until_lsn": str(archived_end)})
    assert gone.status_code == 409, gone.text
    assert "was removed from this node" in gone.json()["error"]

    # A reader asking node 1 for removed WAL gets it from the archive, verified (the donor
    # side of recovery beyond the horizon); verify starts at the removal horizon and finds
    # the rest of the WAL sound.
    first_object = (archive_dir / segment_key(ttid, DEFAULT_START_LSN // SEG_SIZE, SEG_SIZE))
    async with open_wal_stream(cluster[1].wal_url, ttid.tenant_id, ttid.timeline_id,
                               DEFAULT_START_LSN) as stream:
        msg = await stream.receive()
        while not isinstance(msg, WalData):
            msg = await stream.receive()
    assert msg.start_lsn == DEFAULT_START_LSN
    assert msg.data == first_object.read_bytes()[:len(msg.data)]
    ids = ["--tenant-id", str(ttid.tenant_id), "--timeline-id", str(ttid.timeline_id)]
    for where in (["--node", cluster[1].http_url], ["--data-dir", str(cluster[1].data_dir)]):
        checked = await run_cli("verify", *where, *ids, "--no-progress")
        assert checked.returncode == 0, checked.stdout + checked.stderr

    # A crash (SIGKILL) after removal: the node reloads at its horizon, same positions.
    flush = await cluster.flush_lsn(1, ttid)
    await cluster[1].kill()
    await cluster[1].start()
    lc = await lifecycle_of(cluster, 1, ttid)
    assert lc["removal_horizon"] == str(archived_end)
    assert await cluster.flush_lsn(1, ttid) == flush

    # PostgreSQL's restore_command reads the archive back, verified.
    name = segment_key(ttid, DEFAULT_START_LSN // SEG_SIZE + 1, SEG_SIZE).rsplit("/", 1)[1]
    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir()
    done = await run_cli("restore-wal", name, str(dest), "--archive", url, *ids)
    assert done.returncode == 0, done.stderr
    assert dest.read_bytes() == (archive_dir / segment_key(
        ttid, DEFAULT_START_LSN // SEG_SIZE + 1, SEG_SIZE)).read_bytes()
    missing = await run_cli("restore-wal", "0000000100000000000000FF", str(tmp_path / "x"),
                            "--archive", url, *ids)
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0
    assert "0000000100000000000000FF is not in archive" in missing.stderr
    assert not (tmp_path / "x").exists()

    # An archived segment damaged behind its checksum is never served: the stream asking
    # for it closes with 4011 (ArchivedWalUnreadable) before a byte of it.
    first_object.write_bytes(b"\0" * SEG_SIZE)
    async def read_first_segment() -> None:
        async with open_wal_stream(cluster[1].wal_url, ttid.tenant_id, ttid.timeline_id,
                                   DEFAULT_START_LSN) as stream:
            while True:
                got = await stream.receive()
                assert not isinstance(got, WalData), got

    with pytest.raises(WalStreamClosed) as closed:
        await read_first_segment()
    assert closed.value.archive_unreadable, closed.value
    assert closed.value.reason.startswith("archive corrupt: removed segment 0000000100"), (
        closed.value.reason)


async def test_restore_wal_refuses_a_corrupted_archive_object(tmp_path: Path) -> None:
    ttid = make_ttid(15)
    key = segment_key(ttid, 16, SEG_SIZE)
    (tmp_path / key).parent.mkdir(parents=True)
    data = b"\x01" * SEG_SIZE
    (tmp_path / key).write_bytes(data[:-10])  # truncated after its record was written
    (tmp_path / (key + ".sha256")).write_text(
        f"{hashlib.sha256(data).hexdigest()} {len(data)}\n")
    dest = tmp_path / "RECOVERYXLOG"
    done = await run_cli("restore-wal", key.rsplit("/", 1)[1], str(dest), "--archive",
                         f"file://{tmp_path}", "--tenant-id", str(ttid.tenant_id),
                         "--timeline-id", str(ttid.timeline_id))
    assert done.returncode == 1
    assert "is truncated" in done.stderr
    assert not dest.exists()


async def test_when_the_uploader_dies_another_takes_over_and_the_dead_one_catches_up(
    make_cluster: ClusterFactory, tmp_path: Path,
) -> None:
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    cluster = make_cluster(3, extra_args=["--archive", f"file://{archive_dir}"])
    await cluster.start()
    ttid = make_ttid(16)
    await cluster.create_timeline(ttid)
    result = await cluster.propose(*propose_args(cluster, ttid, "2MiB"))
    assert result.returncode == 0, result.stderr

    async def states(nodes: list[int]) -> dict[int, Mapping[str, object]]:
        return {n: await lifecycle_of(cluster, n, ttid) for n in nodes}

    async def agreed(end: Lsn) -> bool:
        every = (await states([1, 2, 3])).values()
        return (all(s["backup_lsn"] == str(end) for s in every)
                and len({s["uploader"] for s in every}) == 1)

    first_end = DEFAULT_START_LSN + 2 * SEG_SIZE
    await wait_until(lambda: agreed(first_end), 30,
                     message=f"backup_lsn {first_end} everywhere, one uploader named by all")
    dead = int(str((await states([1]))[1]["uploader"]))
    await cluster[dead].kill()
    alive = [n for n in (1, 2, 3) if n != dead]
    result = await cluster.propose(*propose_args(cluster, ttid, "3MiB", ids=alive))
    assert result.returncode == 0, result.stderr
    second_end = first_end + 3 * SEG_SIZE
    async def taken_over() -> bool:
        survivors = await states(alive)
        return all(s["backup_lsn"] == str(second_end) and s["uploader"] in alive
                   for s in survivors.values())

    await wait_until(taken_over, 30,
                     message=f"a surviving node took over and archived up to {second_end}")
    survivors = await states(alive)
    # The dead node was heard from moments ago: the survivors keep what it needs.
    for state in survivors.values():
        assert state["removal_horizon"] == str(first_end), state

    # It comes back, catches up by peer recovery, and then every node removes.
    await cluster[dead].start()

    async def removed_everywhere() -> bool:
        horizons = [(await lifecycle_of(cluster, n, ttid))["removal_horizon"]
                    for n in (1, 2, 3)]
        return horizons == [str(second_end)] * 3

    await wait_until(removed_everywhere, 60, message=f"every node removed up to {second_end}")
    keys = sorted(p.name for p in (archive_dir / segment_key(ttid, 0, SEG_SIZE)).parent.iterdir()
                  if not p.name.endswith(".sha256"))
    first = DEFAULT_START_LSN // SEG_SIZE
    assert keys == [segment_key(ttid, n, SEG_SIZE).rsplit("/", 1)[1]
                    for n in range(first, second_end // SEG_SIZE)]
