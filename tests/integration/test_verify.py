"""Real processes: ``propose`` writes PostgreSQL WAL into a 3-node cluster, ``verify`` checks
it over a node's WAL port, then finds a byte flipped in a stopped node's segment file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safekeeper_recovery.core import Lsn, TenantId, TenantTimelineId, TimelineId, segment_file_name
from safekeeper_recovery.pgwal import TRAILER_SIZE, SyntheticWal

from .conftest import ClusterFactory
from .harness import DEFAULT_START_LSN, SEG_SIZE, run_cli
from .test_node_propose import propose_args, summary_lsn

TTID = TenantTimelineId(TenantId.parse("7" * 32), TimelineId.parse("e" * 32))
NBYTES = 3 * 1024 * 1024


def ids(ttid: TenantTimelineId) -> list[str]:
    return ["--tenant-id", str(ttid.tenant_id), "--timeline-id", str(ttid.timeline_id)]


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """name -> (size, mtime_ns) of every file: proof that verify changed nothing."""
    return {
        e.name: (e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(directory)
    }


@pytest.mark.slow
async def test_verify_passes_proposed_wal_and_names_the_record_with_a_flipped_byte(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    await cluster.start()
    await cluster.create_timeline(TTID)
    proposed = await cluster.propose(*propose_args(cluster, TTID, str(NBYTES), "--seed", "5"))
    assert proposed.returncode == 0, proposed.stderr
    end = DEFAULT_START_LSN + NBYTES
    assert summary_lsn(proposed.stdout, "commit_lsn") == end

    for node_id in (1, 3):
        ok = await run_cli("verify", "--node", cluster[node_id].http_url, *ids(TTID),
                           "--no-progress")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert f"WAL {DEFAULT_START_LSN}..{end} is valid" in ok.stdout
        assert f"last valid record at {end - TRAILER_SIZE}" in ok.stdout

    # Plant one flipped byte in the middle of a record in the second segment of node 2.
    await cluster[2].terminate()
    records = list(SyntheticWal(5, DEFAULT_START_LSN, NBYTES, seg_size=SEG_SIZE).record_lsns())
    victim, tot_len = next(
        (lsn, n) for lsn, n in records if lsn >= DEFAULT_START_LSN + SEG_SIZE + 100_000
        and lsn % 8192 + n < 8192
    )
    flipped = Lsn(victim + tot_len // 2)
    directory = cluster[2].data_dir / str(TTID.tenant_id) / str(TTID.timeline_id)
    segment = directory / segment_file_name(flipped // SEG_SIZE, SEG_SIZE)
    with segment.open("r+b") as f:
        f.seek(flipped % SEG_SIZE)
        byte = f.read(1)[0]
        f.seek(flipped % SEG_SIZE)
        f.write(bytes([byte ^ 0x20]))
    before = snapshot(directory)

    bad = await run_cli("verify", "--data-dir", str(cluster[2].data_dir), *ids(TTID),
                        "--no-progress")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"is CORRUPT at {Lsn(victim)}: crc: record at {Lsn(victim)}" in bad.stdout
    assert f"last valid record at {records[records.index((victim, tot_len)) - 1][0]}" in (
        bad.stdout
    )
    assert snapshot(directory) == before

    # The other nodes' data is untouched, and a running node still verifies clean.
    still = await run_cli("verify", "--node", cluster[1].http_url, *ids(TTID), "--no-progress")
    assert still.returncode == 0, still.stdout + still.stderr
