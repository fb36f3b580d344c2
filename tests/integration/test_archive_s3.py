"""Real processes against a real S3-compatible server (SeaweedFS): a node archives to a
bucket, ``restore-wal`` reads a segment back (and refuses a corrupted one); refused
credentials or a missing bucket are reported and nothing is removed."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.storage import segment_key
from safekeeper_recovery.testing import (
    DEFAULT_START_LSN,
    SEG_SIZE,
    make_ttid,
    run_cli,
    wait_until,
)

from .archive_support import lifecycle_of
from .conftest import ClusterFactory
from .recovery_support import propose_args
from .seaweedfs import S3Server

pytestmark = pytest.mark.slow

_prefixes = itertools.count(1)


async def test_a_node_archives_to_s3_and_restore_wal_reads_it_back(
    make_cluster: ClusterFactory, seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name, value in seaweedfs.env.items():
        monkeypatch.setenv(name, value)  # the node and restore-wal inherit them
    url = f"s3://{seaweedfs.bucket}/run{next(_prefixes)}"
    archive = ["--archive", url, "--archive-endpoint", seaweedfs.endpoint]
    # The node keeps its WAL (64 MiB keep size), to compare the archive with it.
    cluster = make_cluster(1, extra_args=[*archive, "--wal-keep-size", "64MiB"])
    await cluster.start()
    ttid = make_ttid(41)
    await cluster.create_timeline(ttid)
    result = await cluster.propose(*propose_args(cluster, ttid, "3MiB"))
    assert result.returncode == 0, result.stderr
    commit = await cluster.commit_lsn(1, ttid)
    archived_end = Lsn(int(commit) - int(commit) % SEG_SIZE)

    async def archived() -> bool:
        return (await lifecycle_of(cluster, 1, ttid))["backup_lsn"] == str(archived_end)

    await wait_until(archived, 30, message=f"backup_lsn reaches {archived_end}")
    s3 = seaweedfs.client()
    prefix = url.split("/", 3)[3] + "/"
    listed = s3.list_objects_v2(Bucket=seaweedfs.bucket, Prefix=prefix)
    segnos = range(DEFAULT_START_LSN // SEG_SIZE, archived_end // SEG_SIZE)
    keys = [prefix + segment_key(ttid, n, SEG_SIZE) for n in segnos]
    assert sorted(o["Key"] for o in listed.get("Contents", [])) == keys
    for n, key in zip(segnos, keys, strict=True):
        body = s3.get_object(Bucket=seaweedfs.bucket, Key=key)["Body"].read()
        digest = await cluster.digest(1, ttid, Lsn(n * SEG_SIZE), Lsn((n + 1) * SEG_SIZE))
        assert hashlib.sha256(body).hexdigest() == digest, key

    ids = ["--tenant-id", str(ttid.tenant_id), "--timeline-id", str(ttid.timeline_id)]
    name = keys[0].rsplit("/", 1)[1]
    dest = tmp_path / "RECOVERYXLOG"
    done = await run_cli("restore-wal", name, str(dest), *archive, *ids)
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == await cluster.digest(
        1, ttid, Lsn(segnos[0] * SEG_SIZE), Lsn((segnos[0] + 1) * SEG_SIZE))

    # Damage the object behind its recorded checksum: restore-wal must refuse it.
    head = s3.head_object(Bucket=seaweedfs.bucket, Key=keys[1])
    s3.put_object(Bucket=seaweedfs.bucket, Key=keys[1], Body=b"\0" * SEG_SIZE,
                  Metadata=head["Metadata"])
    bad = await run_cli("restore-wal", keys[1].rsplit("/", 1)[1], str(dest) + ".2",
                        *archive, *ids)
    assert bad.returncode == 1
    assert "is corrupted" in bad.stderr


@pytest.mark.parametrize("fault", ["wrong credentials", "missing bucket"])
async def test_a_refusing_archive_is_reported_and_nothing_is_removed(
    make_cluster: ClusterFactory, seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    for name, value in seaweedfs.env.items():
        monkeypatch.setenv(name, value)
    bucket = seaweedfs.bucket
    if fault == "wrong credentials":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    else:
        bucket = "no-such-bucket"
    cluster = make_cluster(1, extra_args=[
        "--archive", f"s3://{bucket}/refused", "--archive-endpoint", seaweedfs.endpoint])
    await cluster.start()
    ttid = make_ttid(42)
    await cluster.create_timeline(ttid)
    result = await cluster.propose(*propose_args(cluster, ttid, "3MiB"))
    assert result.returncode == 0, result.stderr

    async def reported() -> bool:
        lc = await lifecycle_of(cluster, 1, ttid)
        return lc["last_error_kind"] in ("auth", "no_bucket")

    await wait_until(reported, 30, message="the archive's refusal in the status")
    lc = await lifecycle_of(cluster, 1, ttid)
    assert "archive s3://" in str(lc["last_error"]), lc
    assert lc["backup_lsn"] == lc["removal_horizon"] == str(DEFAULT_START_LSN), lc
    assert "does not work yet" in cluster[1].stderr(), "the start-up check warned"
    # The node keeps serving: more WAL is accepted, and still nothing is removed.
    more = await cluster.propose(*propose_args(cluster, ttid, "1MiB"))
    assert more.returncode == 0, more.stderr
    assert (await lifecycle_of(cluster, 1, ttid))["removal_horizon"] == str(DEFAULT_START_LSN)
