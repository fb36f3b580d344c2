"""Issue 14's fault drills on real processes: each ends with no acknowledged byte lost,
nothing unarchived removed, uploads resumed and the timeline serving.

Covered elsewhere, not repeated here: wrong credentials and a missing bucket
(``test_archive_s3.py``), an object corrupted behind its checksum (``test_archive_s3.py``
through ``restore-wal``; truncated and corrupted objects of both archives in
``tests/storage/test_archive.py``), the uploader SIGKILLed and replaced
(``test_archive.py``), a full disk (``test_full_disk.py``, ``test_disk_guard.py``).

Here, against a real SeaweedFS behind a fault-injecting proxy (``fault_proxy.py``): an
archive answering 5xx, an unreachable one, a slow one, a node SIGKILLed while an upload
is half-sent; a node SIGKILLed half-way through removing segments (its unlinks slowed by
``strace`` so that the kill lands between two of them); a truncated object in S3.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from safekeeper_recovery.core import Lsn, TenantTimelineId
from safekeeper_recovery.storage import REMOVAL_HORIZON_FILE_NAME, segment_key
from safekeeper_recovery.testing import (
    DEFAULT_START_LSN,
    SEG_SIZE,
    Cluster,
    NodeProcess,
    make_ttid,
    run_cli,
    wait_until,
)

from .archive_support import lifecycle_of
from .conftest import ClusterFactory
from .fault_proxy import FaultProxy, Mode
from .metrics_support import metric
from .recovery_support import propose_args
from .seaweedfs import S3Server

pytestmark = pytest.mark.slow

_prefixes = itertools.count(1)
DEADLINE = 60.0


@asynccontextmanager
async def proxy_for(seaweedfs: S3Server, mode: Mode) -> AsyncIterator[FaultProxy]:
    parts = urlsplit(seaweedfs.endpoint)
    assert parts.hostname is not None
    assert parts.port is not None
    proxy = FaultProxy((parts.hostname, parts.port), mode)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        yield proxy
        nursery.cancel_scope.cancel()


def use_seaweedfs(seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in seaweedfs.env.items():
        monkeypatch.setenv(name, value)  # the nodes and restore-wal inherit them


async def segment_digests(cluster: Cluster, node: int, ttid: TenantTimelineId,
                          end: Lsn) -> dict[int, str]:
    """SHA-256 of each complete segment below ``end`` as ``node`` holds it."""
    first = DEFAULT_START_LSN // SEG_SIZE
    return {n: await cluster.digest(node, ttid, Lsn(n * SEG_SIZE), Lsn((n + 1) * SEG_SIZE))
            for n in range(first, int(end) // SEG_SIZE)}


def archived_objects(seaweedfs: S3Server, url: str, ttid: TenantTimelineId,
                     segnos: list[int]) -> dict[int, str]:
    """SHA-256 of each archived segment (read directly from SeaweedFS, not the proxy)."""
    s3 = seaweedfs.client()
    prefix = url.split("/", 3)[3] + "/"
    listed = s3.list_objects_v2(Bucket=seaweedfs.bucket, Prefix=prefix)
    keys = {o["Key"] for o in listed.get("Contents", [])}
    wanted = {n: prefix + segment_key(ttid, n, SEG_SIZE) for n in segnos}
    assert set(wanted.values()) <= keys, sorted(keys)
    return {n: hashlib.sha256(s3.get_object(Bucket=seaweedfs.bucket, Key=key)["Body"].read())
            .hexdigest() for n, key in wanted.items()}


async def metrics_of(node: NodeProcess) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{node.http_url}/metrics")).text


@pytest.mark.parametrize(("mode", "kind"), [("server_error", "server"),
                                            ("reset", "unreachable")])
async def test_a_failing_archive_holds_removal_and_uploads_resume_when_it_heals(
    make_cluster: ClusterFactory, seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch,
    mode: Mode, kind: str,
) -> None:
    use_seaweedfs(seaweedfs, monkeypatch)
    url = f"s3://{seaweedfs.bucket}/faults{next(_prefixes)}"
    async with proxy_for(seaweedfs, mode) as proxy:
        cluster = make_cluster(1, extra_args=["--archive", url,
                                              "--archive-endpoint", proxy.url])
        await cluster.start()
        ttid = make_ttid(61)
        await cluster.create_timeline(ttid)
        done = await cluster.propose(*propose_args(cluster, ttid, "3MiB"))
        assert done.returncode == 0, done.stderr

        async def failing() -> bool:
            lc = (await cluster.timeline_status(1, ttid)).lifecycle
            assert lc is not None
            return lc.failures_by_kind.get(kind, 0) >= 2

        await wait_until(failing, DEADLINE, message=f"{kind} failures in the status", poll=0.2)
        status = await cluster.timeline_status(1, ttid)
        lc = status.lifecycle
        assert lc is not None
        assert lc.last_error_kind == kind, lc
        assert lc.backup_lsn == lc.removal_horizon == DEFAULT_START_LSN, lc
        assert lc.archive_lag_bytes == int(status.commit_lsn) - int(DEFAULT_START_LSN)
        assert lc.archive_lag_seconds is not None
        assert lc.archive_lag_seconds > 0
        text = await metrics_of(cluster[1])
        assert metric(text, f'safekeeper_archive_failures_total{{kind="{kind}"}}') >= 2
        assert metric(text, "safekeeper_wal_removed_segments_total") == 0
        assert proxy.connections, "the node never reached the proxy"

        # The timeline keeps serving while the archive fails; nothing is removed.
        more = await cluster.propose(*propose_args(cluster, ttid, "1MiB"))
        assert more.returncode == 0, more.stderr
        commit = await cluster.commit_lsn(1, ttid)
        archived_end = Lsn(int(commit) - int(commit) % SEG_SIZE)
        before = await segment_digests(cluster, 1, ttid, archived_end)
        assert (await lifecycle_of(cluster, 1, ttid))["removal_horizon"] == str(
            DEFAULT_START_LSN)

        proxy.set_mode("pass")

        async def healed() -> bool:
            lc = (await cluster.timeline_status(1, ttid)).lifecycle
            assert lc is not None
            # The horizon is recorded before the files are unlinked (crash safety) and the
            # count after, so wait for both.
            return (lc.backup_lsn == lc.removal_horizon == archived_end
                    and lc.removed_bytes == int(archived_end) - int(DEFAULT_START_LSN))

        await wait_until(healed, DEADLINE, message="uploads to resume and WAL removed",
                         poll=0.2)
        lc = (await cluster.timeline_status(1, ttid)).lifecycle
        assert lc is not None
        assert lc.last_error is None
        assert lc.archive_lag_seconds == 0
        assert lc.removed_bytes == int(archived_end) - int(DEFAULT_START_LSN)
        text = await metrics_of(cluster[1])
        assert metric(text, "safekeeper_wal_removed_bytes_total") == lc.removed_bytes
        archived = await trio.to_thread.run_sync(archived_objects, seaweedfs, url, ttid,
                                                 sorted(before))
        assert archived == before, "an archived segment differs from the node's copy"


async def test_a_slow_archive_and_a_node_killed_mid_upload(
    make_cluster: ClusterFactory, seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_seaweedfs(seaweedfs, monkeypatch)
    url = f"s3://{seaweedfs.bucket}/faults{next(_prefixes)}"
    async with proxy_for(seaweedfs, "stall_put") as proxy:
        cluster = make_cluster(1, extra_args=["--archive", url,
                                              "--archive-endpoint", proxy.url])
        await cluster.start()
        ttid = make_ttid(62)
        await cluster.create_timeline(ttid)
        done = await cluster.propose(*propose_args(cluster, ttid, "3MiB"))
        assert done.returncode == 0, done.stderr
        with trio.fail_after(DEADLINE):
            await proxy.put_stalled.wait()  # an upload is half-sent, held by the proxy

        # The timeline serves while its upload hangs.
        with trio.fail_after(DEADLINE):
            more = await cluster.propose(*propose_args(cluster, ttid, "1MiB"))
        assert more.returncode == 0, more.stderr
        commit = await cluster.commit_lsn(1, ttid)
        archived_end = Lsn(int(commit) - int(commit) % SEG_SIZE)
        before = await segment_digests(cluster, 1, ttid, archived_end)
        lc = await lifecycle_of(cluster, 1, ttid)
        assert lc["removal_horizon"] == str(DEFAULT_START_LSN), lc

        await cluster[1].kill()  # SIGKILL, the PUT half-sent
        proxy.delay = 0.5
        proxy.set_mode("slow")  # every request now waits 0.5 s: a slow archive
        await cluster[1].start()
        assert await cluster.commit_lsn(1, ttid) == commit

        async def archived_and_removed() -> bool:
            lc = (await cluster.timeline_status(1, ttid)).lifecycle
            assert lc is not None
            return lc.backup_lsn == lc.removal_horizon == archived_end

        await wait_until(archived_and_removed, 3 * DEADLINE,
                         message="uploads to resume through the slow archive", poll=0.5)
        assert proxy.requests["PUT"] >= len(before) + 1, proxy.requests
        archived = await trio.to_thread.run_sync(archived_objects, seaweedfs, url, ttid,
                                                 sorted(before))
        assert archived == before, "an archived segment differs from the node's copy"
        ids = ["--tenant-id", str(ttid.tenant_id), "--timeline-id", str(ttid.timeline_id)]
        checked = await run_cli("verify", "--node", cluster[1].http_url, *ids, "--no-progress")
        assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_a_truncated_object_in_s3_is_refused_never_served(
    make_cluster: ClusterFactory, seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_seaweedfs(seaweedfs, monkeypatch)
    url = f"s3://{seaweedfs.bucket}/faults{next(_prefixes)}"
    archive = ["--archive", url, "--archive-endpoint", seaweedfs.endpoint]
    cluster = make_cluster(1, extra_args=[*archive, "--wal-keep-size", "64MiB"])
    await cluster.start()
    ttid = make_ttid(63)
    await cluster.create_timeline(ttid)
    done = await cluster.propose(*propose_args(cluster, ttid, "2MiB"))
    assert done.returncode == 0, done.stderr
    first = DEFAULT_START_LSN // SEG_SIZE

    async def archived() -> bool:
        return Lsn.parse(str((await lifecycle_of(cluster, 1, ttid))["backup_lsn"])) > (
            DEFAULT_START_LSN)

    await wait_until(archived, DEADLINE, message="a segment archived", poll=0.2)
    s3 = seaweedfs.client()
    key = url.split("/", 3)[3] + "/" + segment_key(ttid, first, SEG_SIZE)
    obj = s3.get_object(Bucket=seaweedfs.bucket, Key=key)
    body, meta = obj["Body"].read(), obj["Metadata"]
    s3.put_object(Bucket=seaweedfs.bucket, Key=key, Body=body[: len(body) // 2], Metadata=meta)
    ids = ["--tenant-id", str(ttid.tenant_id), "--timeline-id", str(ttid.timeline_id)]
    dest = tmp_path / "RECOVERYXLOG"
    bad = await run_cli("restore-wal", key.rsplit("/", 1)[1], str(dest), *archive, *ids)
    assert bad.returncode == 1, bad
    errors = [line for line in bad.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, bad.stderr
    assert "truncated" in errors[0], errors
    assert not dest.exists(), "a truncated object was written where PostgreSQL reads WAL"


def _ptrace_works() -> bool:
    return shutil.which("strace") is not None and os.geteuid() == 0


@pytest.mark.skipif(not _ptrace_works(), reason="needs strace and root to slow a node down")
async def test_a_node_killed_mid_removal_reloads_and_serves(
    make_cluster: ClusterFactory, tmp_path: Path,
) -> None:
    cluster = make_cluster(1)
    node = cluster[1]
    await cluster.start()
    ttid = make_ttid(64)
    await cluster.create_timeline(ttid)
    done = await cluster.propose(*propose_args(cluster, ttid, "6MiB"))
    assert done.returncode == 0, done.stderr
    flush = await cluster.flush_lsn(1, ttid)
    tail_start = Lsn(int(flush) - int(flush) % SEG_SIZE)
    before = await segment_digests(cluster, 1, ttid, tail_start)
    tail = await cluster.digest(1, ttid, tail_start, flush)
    await node.kill()

    # Restart with a keep size: its first lifecycle step (after the heartbeat timeout)
    # removes several segments in one go. strace slows every unlink to 3 s, and the node
    # is SIGKILLed once the first segment is gone: between two unlinks of one removal.
    node.extra_args = ["--wal-keep-size", "1MiB", "--heartbeat-timeout", "5s"]
    await node.start()
    trace = tmp_path / "strace.out"
    err = await trio.open_file(tmp_path / "strace.err", "wb")
    strace = await trio.lowlevel.open_process(
        ["strace", "-f", "-p", str(node.pid), "-o", str(trace), "-e", "trace=unlink,unlinkat",
         "-e", "inject=unlink:delay_enter=3s", "-e", "inject=unlinkat:delay_enter=3s"],
        stderr=err.fileno())
    try:
        await wait_until(lambda: "attached" in (tmp_path / "strace.err").read_text(), 10,
                         message="strace to attach")
        directory = node.data_dir / str(ttid.tenant_id) / str(ttid.timeline_id)
        segments = sorted(p.name for p in directory.iterdir() if len(p.name.split(".")[0]) == 24)
        first = segments[0]

        def first_segment_gone() -> bool:
            return (directory / REMOVAL_HORIZON_FILE_NAME).exists() and not (
                directory / first).exists()

        await wait_until(first_segment_gone, 30, message="the removal to start", poll=0.02)
        os.kill(node.pid, signal.SIGKILL)
    finally:
        with trio.CancelScope(shield=True):
            await node.kill()
            strace.kill()
            await strace.wait()
            await err.aclose()
    left = sorted(p.name for p in directory.iterdir() if len(p.name.split(".")[0]) == 24)
    assert first not in left
    assert len(left) >= len(segments) - 2, (segments, left)  # killed half-way, not after

    node.extra_args = ["--wal-keep-size", "1MiB"]
    await node.start()
    status = await cluster.timeline_status(1, ttid)
    assert status.broken is None
    assert status.flush_lsn == flush
    lc = status.lifecycle
    assert lc is not None
    assert lc.removal_horizon > DEFAULT_START_LSN, "the recorded horizon was not kept"
    await wait_until(lambda: len([p for p in directory.iterdir()
                                  if len(p.name.split(".")[0]) == 24]) <= 2, DEADLINE,
                     message="the interrupted removal to finish")
    # What is kept is what was there before the crash, byte for byte.
    lc = (await cluster.timeline_status(1, ttid)).lifecycle
    assert lc is not None
    horizon = lc.removal_horizon
    for segno, sha in before.items():
        if segno * SEG_SIZE >= int(horizon):
            got = await cluster.digest(1, ttid, Lsn(segno * SEG_SIZE),
                                       Lsn((segno + 1) * SEG_SIZE))
            assert got == sha, segno
    assert await cluster.digest(1, ttid, tail_start, flush) == tail
    more = await cluster.propose(*propose_args(cluster, ttid, "1MiB"))
    assert more.returncode == 0, more.stderr
