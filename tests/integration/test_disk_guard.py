"""Issue 14, the disk guard (rules U1-U4, ``core/_disk_guard.py``) on a real file system.

Node 1's data directory is a small loop-mounted ext4 (as in ``test_full_disk.py``) with
``--max-disk-usage 50%``; node 2, its peer, is on the ordinary disk. A filler file takes
node 1's disk past the limit: a proposer is refused with close code 4012 and says so in
one ``Error:`` line, the timeline is not stopped and loses nothing, recovery from node 2
pauses and says why, the node status and metrics say why. Once the filler is removed, the
node takes WAL again and recovery catches up, without a restart. Needs root and mkfs.ext4.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest
import trio

from safekeeper_recovery.core import DiskLimit, Lsn
from safekeeper_recovery.storage import measure_disk_usage
from safekeeper_recovery.testing import (
    DEFAULT_START_LSN,
    SEG_SIZE,
    NodeProcess,
    allocate_ports,
    make_ttid,
    run_cli,
    wait_until,
)
from safekeeper_recovery.transport import parse_timeline_status

from .hostile_support import ttid_url, write_wal
from .test_full_disk import free_bytes, small_ext4

pytestmark = pytest.mark.slow

TTID = make_ttid(14)
DEADLINE = 30.0


async def get(node: NodeProcess, url: str) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=node.http_url, timeout=10) as http:
        r = await http.get(url)
    assert r.status_code == 200, r.text
    answer: dict[str, object] = r.json()
    return answer


async def metric(node: NodeProcess, name: str) -> float:
    async with httpx.AsyncClient(base_url=node.http_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m is not None, f"{name} not in /metrics"
    return float(m.group(1))


def leave_room(filler: Path, nbytes: int) -> None:
    """Write ``nbytes`` of filler, durably (so the file system has counted them)."""
    with filler.open("wb") as f:
        f.write(b"\xa5" * nbytes)
        f.flush()
        os.fsync(f.fileno())


async def refusing(node: NodeProcess) -> str | None:
    disk = (await get(node, "/v1/status"))["disk"]
    assert isinstance(disk, dict), disk
    reason = disk["refusing"]
    assert reason is None or isinstance(reason, str)
    return reason


async def test_past_max_disk_usage_wal_is_refused_and_taken_again_once_space_is_freed(
    tmp_path: Path,
) -> None:
    ports = allocate_ports(4)
    guarded = NodeProcess(1, tmp_path / "n1", ports[0], ports[1],
                          extra_args=["--max-disk-usage", "50%"])
    other = NodeProcess(2, tmp_path / "n2", ports[2], ports[3])
    guarded.peers = {2: other.http_url}
    other.peers = {1: guarded.http_url}
    async with small_ext4(guarded.data_dir, tmp_path / "disk.img") as disk:
        try:
            for node in (guarded, other):
                await node.start()
                async with node.client() as client:
                    await client.create_timeline(TTID, DEFAULT_START_LSN, wal_seg_size=SEG_SIZE)
            acked = await write_wal(guarded, TTID)
            assert await refusing(guarded) is None

            async def other_has_it() -> bool:
                return parse_timeline_status(await get(other, ttid_url(TTID))).flush_lsn == acked

            await wait_until(other_has_it, DEADLINE, message="node 2 to recover", poll=0.2)

            # Take the disk past 50 %: the guard notices within its 1 s measurement.
            node_status = await get(guarded, "/v1/status")
            measured = node_status["disk"]
            assert isinstance(measured, dict), node_status
            over = int(measured["limit_bytes"]) - int(measured["fs_used_bytes"]) + 2 * SEG_SIZE
            assert over < free_bytes(disk), (measured, free_bytes(disk))
            filler = disk / "filler"
            filler.write_bytes(b"\xa5" * over)
            await wait_until(lambda: _is_refusing(guarded), 10,
                             message="the guard to refuse", poll=0.1)

            # U2: a proposer is refused, cleanly, with one Error: line naming the cause.
            done = await run_cli(
                "propose", "--safekeepers", guarded.wal_url,
                "--tenant-id", str(TTID.tenant_id), "--timeline-id", str(TTID.timeline_id),
                "--bytes", "256KiB", "--wal-seg-size", "1MiB", "--lost-quorum-timeout", "2s",
                timeout=DEADLINE)
            assert done.returncode == 1, done
            errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
            assert len(errors) == 1, done.stderr
            assert "4012" in errors[0], errors
            assert "--max-disk-usage 50%" in errors[0], errors
            assert "docs/errors.md#u2" in errors[0], errors

            status = parse_timeline_status(await get(guarded, ttid_url(TTID)))
            assert status.broken is None, status.broken
            assert status.flush_lsn == acked, "the refused append wrote something"
            assert status.lifecycle is not None
            assert status.lifecycle.disk is not None
            assert status.lifecycle.disk.refusing is not None
            assert status.lifecycle.disk.refused_appends >= 1
            assert status.lifecycle.wal_disk_bytes == SEG_SIZE
            assert await metric(guarded, "safekeeper_disk_guard_refusing") == 1
            table = await run_cli("status", "--node", guarded.http_url, timeout=DEADLINE)
            assert table.returncode == 0, table
            assert "REFUSING WAL" in table.stdout, table.stdout
            assert await metric(guarded, "safekeeper_disk_guard_refused_appends_total") >= 1

            # U2: recovery pauses. Node 2 alone takes WAL the guarded node lacks.
            ahead = await write_wal(other, TTID, 3 * SEG_SIZE)

            async def recovery_paused() -> bool:
                s = parse_timeline_status(await get(guarded, ttid_url(TTID)))
                return (s.recovery.state == "paused" and s.recovery.paused is not None
                        and "max-disk-usage" in s.recovery.paused)

            await wait_until(recovery_paused, DEADLINE, message="recovery to pause", poll=0.2)
            paused = parse_timeline_status(await get(guarded, ttid_url(TTID)))
            assert paused.flush_lsn == acked, "recovery wrote past the guard"

            # U3: space comes back, no restart. Recovery catches up, appends are taken.
            filler.unlink()
            await wait_until(lambda: _not_refusing(guarded), 10,
                             message="the guard to take WAL again", poll=0.1)

            async def caught_up() -> bool:
                s = parse_timeline_status(await get(guarded, ttid_url(TTID)))
                return s.flush_lsn == ahead

            await wait_until(caught_up, DEADLINE, message="recovery to catch up", poll=0.2)
            async with guarded.client() as mine, other.client() as theirs:
                start = Lsn(DEFAULT_START_LSN)
                assert (await mine.digest(TTID, start, ahead)
                        == await theirs.digest(TTID, start, ahead))
            end = await write_wal(guarded, TTID, SEG_SIZE)
            assert end == ahead + SEG_SIZE
            assert await metric(guarded, "safekeeper_disk_guard_refusing") == 0
        finally:
            with trio.CancelScope(shield=True):
                for node in (guarded, other):
                    if node.running:
                        await node.kill()


async def _is_refusing(node: NodeProcess) -> bool:
    return await refusing(node) is not None


async def _not_refusing(node: NodeProcess) -> bool:
    return await refusing(node) is None


async def test_removal_frees_the_space_and_the_guard_takes_wal_again_by_itself(
    tmp_path: Path,
) -> None:
    """Past the limit because the archive failed (nothing may be removed): once the
    archive works again, uploads and removal run while WAL is refused, free the space, and
    the guard takes WAL again, with nothing unarchived removed."""
    http_port, wal_port = allocate_ports(2)
    archive = tmp_path / "archive"  # missing: every upload fails until it is created
    node = NodeProcess(1, tmp_path / "n1", http_port, wal_port, extra_args=[
        "--no-recovery", "--max-disk-usage", "50%", "--archive", f"file://{archive}"])
    async with small_ext4(node.data_dir, tmp_path / "disk.img") as disk:
        try:
            await node.start()
            async with node.client() as client:
                await client.create_timeline(TTID, DEFAULT_START_LSN, wal_seg_size=SEG_SIZE)
            usage = measure_disk_usage(disk)  # now, not the guard's last measurement
            headroom = DiskLimit(percent=50).limit_bytes(usage.size) - usage.used
            leave_room(disk / "filler", headroom - 3 * SEG_SIZE)
            filled = measure_disk_usage(disk).used

            async def filler_measured() -> bool:
                # The guard counts only its own WAL between two measurements (U4): until
                # it has measured the filler, it would admit up to the old headroom, and
                # the propose (a fraction of a second) fits inside one interval (1 s).
                lc = parse_timeline_status(await get(node, ttid_url(TTID))).lifecycle
                assert lc is not None
                used = None if lc.disk is None else lc.disk.fs_used_bytes
                return used is not None and used >= filled

            await wait_until(filler_measured, DEADLINE, message="the guard to measure the "
                             "filler", poll=0.1)

            done = await run_cli(
                "propose", "--safekeepers", node.wal_url,
                "--tenant-id", str(TTID.tenant_id), "--timeline-id", str(TTID.timeline_id),
                "--bytes", "8MiB", "--wal-seg-size", "1MiB", "--lost-quorum-timeout", "2s",
                "--no-progress", timeout=DEADLINE)
            assert done.returncode == 1, done
            assert "4012" in done.stderr, done.stderr
            status = parse_timeline_status(await get(node, ttid_url(TTID)))
            lc = status.lifecycle
            assert lc is not None
            assert lc.disk is not None
            assert lc.disk.refusing is not None
            assert lc.removal_horizon == DEFAULT_START_LSN, "removed WAL that is not archived"
            committed = status.commit_lsn
            assert committed >= DEFAULT_START_LSN + 2 * SEG_SIZE, status

            async def io_failures() -> bool:
                lc = parse_timeline_status(await get(node, ttid_url(TTID))).lifecycle
                assert lc is not None
                return lc.failures_by_kind.get("unreachable", 0) >= 1

            await wait_until(io_failures, DEADLINE, message="the archive's failure", poll=0.2)

            archive.mkdir()  # the operator mends the archive; nobody frees space by hand
            await wait_until(lambda: _not_refusing(node), 2 * DEADLINE,
                             message="removal to free space and the guard to resume", poll=0.2)
            lc = parse_timeline_status(await get(node, ttid_url(TTID))).lifecycle
            assert lc is not None
            assert lc.removal_horizon > DEFAULT_START_LSN
            assert lc.removal_horizon <= lc.backup_lsn, "removed WAL that is not archived"
            archived = sorted(p.name for p in archive.rglob("*") if p.is_file()
                              and len(p.name) == 24)
            assert len(archived) == (int(lc.backup_lsn) - int(DEFAULT_START_LSN)) // SEG_SIZE
            end = await write_wal(node, TTID, SEG_SIZE)
            assert end == committed + SEG_SIZE
        finally:
            with trio.CancelScope(shield=True):
                if node.running:
                    await node.kill()
