"""Issue 20, defect 2, on a real file system: a real ``serve`` process whose data directory
is a small ext4 (a loop-mounted image, as in the issue) runs out of space.

The timeline being written stops ("disk full") and leaves no ``waltmp`` behind, so the
space that is left still lets another timeline on the same disk persist its control file;
once space is freed the stopped timeline takes WAL again by itself, without a restart, and
everything loads after one. Needs root (to mount) and mkfs.ext4; skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import httpx
import pytest
import trio

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.proposer import (
    ProposerConfig,
    ProposerError,
    propose,
    websocket_connector,
)
from safekeeper_recovery.testing import (
    DEFAULT_START_LSN,
    SEG_SIZE,
    NodeProcess,
    allocate_ports,
    make_ttid,
    wait_until,
)

from .hostile_support import restart_and_check, ttid_url, write_wal

pytestmark = pytest.mark.slow

VICTIM, OTHER = make_ttid(1), make_ttid(2)
DISK_MIB: Final = 24
LEFT_FREE: Final = SEG_SIZE + SEG_SIZE // 2
"""Free space left for the test once the filler is written: one more segment fits, the
one after it does not."""


async def run(*command: str) -> None:
    done = await trio.run_process(list(command), capture_stdout=True, capture_stderr=True,
                                  check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot set up a small ext4 ({' '.join(command)}): "
                    f"{done.stderr.decode().strip()}")


@asynccontextmanager
async def small_ext4(mount_point: Path, image: Path) -> AsyncIterator[Path]:
    """A ``DISK_MIB`` MiB ext4 (no blocks reserved for root) mounted at ``mount_point``."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs root and mkfs.ext4 to loop-mount a small ext4")
    with image.open("wb") as f:
        f.truncate(DISK_MIB << 20)
    await run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
    await trio.Path(mount_point).mkdir(parents=True)
    await run("mount", "-o", "loop", str(image), str(mount_point))
    try:
        yield mount_point
    finally:
        with trio.CancelScope(shield=True):
            await trio.run_process(["umount", str(mount_point)], check=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def leave_free(directory: Path, wanted: int) -> Path:
    """Write a filler file so that about ``wanted`` bytes stay free."""
    filler = directory / "filler"
    with filler.open("wb") as f:
        f.write(b"\xa5" * max(0, free_bytes(directory) - wanted))
        f.flush()
        os.fsync(f.fileno())
    return filler


async def status(node: NodeProcess, url: str) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=node.http_url, timeout=10) as http:
        r = await http.get(url)
    assert r.status_code == 200, r.text
    answer: dict[str, object] = r.json()
    return answer


async def test_a_full_ext4_stops_one_timeline_which_heals_when_space_returns(
    tmp_path: Path,
) -> None:
    http_port, wal_port = allocate_ports(2)
    # The disk guard (--max-disk-usage, test_disk_guard.py) would refuse WAL before the
    # disk is full: off here, this test is about what happens when it does fill up.
    node = NodeProcess(1, tmp_path / "node", http_port, wal_port,
                       extra_args=["--no-recovery", "--max-disk-usage", "off"])
    async with small_ext4(node.data_dir, tmp_path / "disk.img") as disk:
        try:
            await node.start()
            async with node.client() as client:
                for ttid in (VICTIM, OTHER):
                    await client.create_timeline(ttid, DEFAULT_START_LSN, wal_seg_size=SEG_SIZE)
            await write_wal(node, OTHER)
            filler = leave_free(disk, LEFT_FREE)

            config = ProposerConfig(
                safekeepers=(node.wal_url,), tenant_id=VICTIM.tenant_id,
                timeline_id=VICTIM.timeline_id, total_bytes=4 * SEG_SIZE,
                lost_quorum_timeout=2.0,
            )
            with trio.fail_after(30), pytest.raises(ProposerError) as stopped:
                await propose(config, websocket_connector(VICTIM.tenant_id,
                                                          VICTIM.timeline_id))
            assert "disk full" in str(stopped.value), stopped.value

            victim = await status(node, ttid_url(VICTIM))
            assert str(victim["broken"]).startswith("disk full: "), victim
            acked = Lsn.parse(str(victim["flush_lsn"]))
            victim_dir = node.data_dir / str(VICTIM.tenant_id) / str(VICTIM.timeline_id)
            assert not list(victim_dir.glob("*tmp*")), list(victim_dir.iterdir())
            assert free_bytes(disk) > 64 * 1024, "the failed segment holds the free space"

            # Another timeline on the full disk still persists its control file.
            async with httpx.AsyncClient(base_url=node.http_url, timeout=10) as http:
                bump = await http.post(f"{ttid_url(OTHER)}/term_bump", json={})
            assert bump.status_code == 200, bump.text
            assert (await status(node, ttid_url(OTHER)))["broken"] is None

            filler.unlink()  # space is back: no restart

            async def healed() -> bool:
                return (await status(node, ttid_url(VICTIM)))["broken"] is None

            await wait_until(healed, 60, message="the stopped timeline to heal by itself",
                             poll=0.2)
            end = await write_wal(node, VICTIM, 2 * SEG_SIZE)
            assert end >= acked + 2 * SEG_SIZE
            await restart_and_check(node, [VICTIM, OTHER])
            assert Lsn.parse(str((await status(node, ttid_url(VICTIM)))["flush_lsn"])) >= end
        finally:
            if node.running:
                await node.kill()
