"""Real processes: ``propose`` writes PostgreSQL WAL into a 3-node cluster (the third node
catches up by peer recovery), ``verify`` checks it over the WAL port, then finds a byte
flipped in a stopped node's segment file; a node killed mid-stream ends in a torn tail,
which is not corruption."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from safekeeper_recovery.core import Lsn, TenantTimelineId, segment_file_name
from safekeeper_recovery.pgwal import (
    DEFAULT_SYSTEM_ID,
    TRAILER_SIZE,
    SyntheticWal,
    continue_synthetic,
)
from safekeeper_recovery.testing import (
    DEFAULT_START_LSN,
    SEG_SIZE,
    ProcessResult,
    make_ttid,
    run_cli,
    wait_until,
)

from .conftest import ClusterFactory
from .recovery_support import propose_args, wait_caught_up
from .test_node_propose import summary_lsn


def _pg_waldump() -> str | None:
    pg_config = shutil.which("pg_config")
    bindir = None
    if pg_config is not None:
        bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                check=False).stdout.strip() or None
    return shutil.which("pg_waldump", path=bindir) or shutil.which("pg_waldump")


PG_WALDUMP = _pg_waldump()
TTID = make_ttid(0xE, tenant=7)
RANDOM_TTID = make_ttid(0xD, tenant=7)
NBYTES = 3 * 1024 * 1024


def proposed_wal(seed: int, nbytes: int) -> SyntheticWal:
    """The WAL ``propose --seed SEED --bytes NBYTES`` writes on a new timeline."""
    wal = continue_synthetic(seed, nbytes, DEFAULT_START_LSN, [DEFAULT_START_LSN],
                             seg_size=SEG_SIZE, system_id=DEFAULT_SYSTEM_ID)
    assert isinstance(wal, SyntheticWal)  # a run at the timeline's start continues nothing
    return wal


async def run_process_text(args: list[str]) -> ProcessResult:
    with trio.fail_after(60):
        done = await trio.run_process(args, capture_stdout=True, capture_stderr=True,
                                      check=False)
    return ProcessResult(done.returncode, done.stdout.decode(), done.stderr.decode())


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
    await cluster[3].terminate()  # node 3 gets the WAL by peer recovery, not from the proposer
    proposed = await cluster.propose(
        *propose_args(cluster, TTID, str(NBYTES), "--seed", "5", ids=[1, 2])
    )
    assert proposed.returncode == 0, proposed.stderr
    end = DEFAULT_START_LSN + NBYTES
    assert summary_lsn(proposed.stdout, "commit_lsn") == end
    await cluster[3].start()
    await wait_caught_up(cluster, 3, TTID, end)

    for node_id in (1, 3):
        ok = await run_cli("verify", "--node", cluster[node_id].http_url, *ids(TTID),
                           "--no-progress")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert f"WAL {DEFAULT_START_LSN}..{end} is valid" in ok.stdout
        assert f"last valid record at {end - TRAILER_SIZE}" in ok.stdout

    # Plant one flipped byte in the middle of a record in the second segment of node 2.
    await cluster[2].terminate()
    records = list(proposed_wal(5, NBYTES).record_lsns())
    victim, tot_len = next(
        (lsn, n) for lsn, n in records if lsn >= DEFAULT_START_LSN + SEG_SIZE + 100_000
        and lsn % 8192 + n < 8192 and n >= 100
    )
    flipped = Lsn(victim + tot_len // 2)  # in the record's data, past its 24-byte header
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


@pytest.mark.slow
async def test_verify_rejects_pseudo_random_wal_at_its_first_page(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    await cluster.start()
    await cluster.create_timeline(RANDOM_TTID)
    proposed = await cluster.propose(
        *propose_args(cluster, RANDOM_TTID, "1MiB", "--wal-format", "random", ids=[1, 2, 3])
    )
    assert proposed.returncode == 0, proposed.stderr
    bad = await run_cli("verify", "--node", cluster[1].http_url, *ids(RANDOM_TTID),
                        "--no-progress")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"is CORRUPT at {DEFAULT_START_LSN}: page magic" in bad.stdout


@pytest.mark.slow
async def test_verify_with_auth_on_needs_a_safekeeperdata_token(
    tmp_path: Path, make_cluster: ClusterFactory
) -> None:
    keys = tmp_path / "keys"
    assert (await run_cli("keygen", "--out-dir", str(keys))).returncode == 0
    made = await run_cli("token", "--private-key", str(keys / "auth_private_key.pem"),
                         "--scope", "safekeeperdata")
    assert made.returncode == 0, made.stderr
    token_file = tmp_path / "admin.jwt"
    token_file.write_text(made.stdout.strip() + "\n")
    cluster = make_cluster(
        1,
        extra_args=["--auth-public-key", str(keys / "auth_public_key.pem"),
                    "--token-file", str(token_file)],
        token=made.stdout.strip(),
    )
    await cluster.start()
    await cluster.create_timeline(TTID)
    proposed = await cluster.propose(
        *propose_args(cluster, TTID, "1MiB", "--token-file", str(token_file))
    )
    assert proposed.returncode == 0, proposed.stderr

    node = cluster[1].http_url
    refused = await run_cli("verify", "--node", node, *ids(TTID), "--no-progress")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "401" in refused.stderr
    ok = await run_cli("verify", "--node", node, *ids(TTID), "--token-file", str(token_file),
                       "--no-progress")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"WAL {DEFAULT_START_LSN}..{DEFAULT_START_LSN + 1024 * 1024} is valid" in ok.stdout


@pytest.mark.slow
@pytest.mark.skipif(PG_WALDUMP is None, reason="pg_waldump not found: install PostgreSQL 15")
async def test_pg_waldump_reads_the_segments_a_node_stored(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(1)
    await cluster.start()
    await cluster.create_timeline(TTID)
    proposed = await cluster.propose(*propose_args(cluster, TTID, "2MiB", "--seed", "8"))
    assert proposed.returncode == 0, proposed.stderr
    await cluster[1].terminate()
    directory = cluster[1].data_dir / str(TTID.tenant_id) / str(TTID.timeline_id)
    end = DEFAULT_START_LSN + 2 * SEG_SIZE  # the complete segments (not the .partial one)
    assert PG_WALDUMP is not None
    done = await run_process_text(
        [PG_WALDUMP, "-p", str(directory), "-s", str(DEFAULT_START_LSN), "-e", str(end)]
    )
    assert done.returncode == 0, done.stderr
    lsns = [Lsn.parse(m) for m in re.findall(r"lsn: ([0-9A-F]+/[0-9A-F]+)", done.stdout)]
    expected = [lsn for lsn, _ in proposed_wal(8, 2 * SEG_SIZE).record_lsns()]
    assert lsns == expected
    verified = await run_cli("verify", "--data-dir", str(cluster[1].data_dir), *ids(TTID),
                             "--no-progress")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{len(expected)} records" in verified.stdout


@pytest.mark.slow
async def test_verify_data_dir_of_a_node_killed_mid_stream_reports_a_torn_tail_and_exits_0(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    await cluster.start()
    await cluster.create_timeline(TTID)
    nbytes = 24 * 1024 * 1024
    proposer = await cluster.start_propose(
        "propose", *propose_args(cluster, TTID, str(nbytes), "--seed", "6")
    )
    try:
        async def streaming() -> bool:
            return await cluster.flush_lsn(3, TTID) >= DEFAULT_START_LSN + 2 * 1024 * 1024

        await wait_until(streaming, 60, message="node 3 to receive WAL")
        await cluster[3].kill()  # mid-stream: its flush position is wherever the data stopped
        done = await proposer.wait(timeout=120)
    finally:
        proposer.kill()
    assert done.returncode == 0, done.stderr  # nodes 1 and 2 are a quorum
    wal = proposed_wal(6, nbytes)

    result = await run_cli("verify", "--data-dir", str(cluster[3].data_dir), *ids(TTID),
                           "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"WAL (\S+)\.\.(\S+) is valid", result.stdout)
    assert found is not None, result.stdout
    flushed = Lsn.parse(found.group(2))
    assert DEFAULT_START_LSN < flushed < wal.end_lsn, "node 3 was not killed mid-stream"
    # The oracle: the proposer's WAL is known, so is the record the flush position cuts.
    records = list(wal.record_lsns())
    ends = {lsn + n for lsn, n in records} | {lsn for lsn, _ in records}
    cut = [lsn for lsn, n in records if lsn < flushed < lsn + n]
    if flushed in ends or not cut:  # on a record boundary (about 1 in 1000): no torn tail
        assert "torn tail" not in result.stdout, result.stdout
    else:
        assert f"torn tail: the WAL ends at {flushed} inside the record at {cut[0]}" in (
            result.stdout
        )

    # verify --data-dir only reads: it works on a running node's directory too (it takes
    # no lock), up to the flush position recorded when it starts.
    running = await run_cli("verify", "--data-dir", str(cluster[1].data_dir), *ids(TTID),
                            "--no-progress")
    assert running.returncode == 0, running.stdout + running.stderr
    assert f"WAL {DEFAULT_START_LSN}..{wal.end_lsn} is valid" in running.stdout


@pytest.mark.slow
async def test_wal_of_a_proposer_killed_mid_record_is_continued_validly(
    make_cluster: ClusterFactory,
) -> None:
    """Fault-campaign finding F1: ``propose --rate`` is SIGKILLed while streaming, so the
    quorum's WAL ends wherever its last append ended (inside a record, almost surely). The
    next ``propose`` continues from there, and the whole WAL verifies on every node."""
    cluster = make_cluster(3)
    await cluster.start()
    await cluster.create_timeline(TTID)
    proposer = await cluster.start_propose(
        "propose", *propose_args(cluster, TTID, "8MiB", "--seed", "4", "--rate", "2MiB")
    )
    try:
        async def committed_some() -> bool:
            flushes = [await cluster.flush_lsn(i, TTID) for i in (1, 2, 3)]
            return sorted(flushes)[1] >= DEFAULT_START_LSN + 1024 * 1024

        await wait_until(committed_some, 60, message="a quorum to hold 1 MiB")
        proposer.kill()
        await proposer.process.wait()
    finally:
        proposer.kill()
    cut = max([await cluster.flush_lsn(i, TTID) for i in (1, 2, 3)])
    assert cut < DEFAULT_START_LSN + 8 * 1024 * 1024, "the proposer finished before the kill"

    again = await cluster.propose(*propose_args(cluster, TTID, "1MiB", "--seed", "4"))
    assert again.returncode == 0, again.stderr
    end = summary_lsn(again.stdout, "commit_lsn")
    assert end > cut
    await wait_caught_up(cluster, 3, TTID, end)
    for node_id in (1, 2, 3):
        ok = await run_cli("verify", "--node", cluster[node_id].http_url, *ids(TTID),
                           "--no-progress")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert f"WAL {DEFAULT_START_LSN}..{end} is valid" in ok.stdout
