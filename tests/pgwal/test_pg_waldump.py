"""PostgreSQL's own pg_waldump parses the synthetic WAL to the end (and spots a flipped byte).

Skipped only when no PostgreSQL 15 pg_waldump is installed (CI installs PostgreSQL).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from safekeeper_recovery.core import Lsn, segment_file_name
from safekeeper_recovery.pgwal import SyntheticWal, continuation_prev_lsn, verify_chunks
from safekeeper_recovery.testing import MiB


def _find_pg_waldump() -> tuple[str | None, str]:
    bindir = None
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = done.stdout.strip() or None
    path = shutil.which("pg_waldump", path=bindir) or shutil.which("pg_waldump")
    if path is None:
        return None, "pg_waldump not found (pg_config --bindir, PATH): install PostgreSQL 15"
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    if not re.search(r"\b15\.", version.stdout):
        return None, f"pg_waldump is not PostgreSQL 15's ({version.stdout.strip()})"
    return path, ""


PG_WALDUMP, WHY_NOT = _find_pg_waldump()
pytestmark = pytest.mark.skipif(PG_WALDUMP is None, reason=WHY_NOT)
LINE = re.compile(r"lsn: ([0-9A-F]+/[0-9A-F]+), prev ([0-9A-F]+/[0-9A-F]+), desc: NOOP")


def write_segments(directory: Path, start: Lsn, data: bytes, seg_size: int) -> None:
    """``data`` (from the segment start ``start``) as full-size PostgreSQL segment files."""
    assert start % seg_size == 0
    data += bytes(-len(data) % seg_size)
    for offset in range(0, len(data), seg_size):
        name = segment_file_name((start + offset) // seg_size, seg_size)
        (directory / name).write_bytes(data[offset : offset + seg_size])


def pg_waldump(directory: Path, start: Lsn, end: Lsn) -> subprocess.CompletedProcess[str]:
    assert PG_WALDUMP is not None
    return subprocess.run(
        [PG_WALDUMP, "-p", str(directory), "-s", str(start), "-e", str(end)],
        capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.mark.parametrize(("seed", "seg_size"), [(1, MiB), (2, 4 * MiB), (3, 16 * MiB)])
def test_pg_waldump_parses_two_consecutive_runs_to_the_end(
    tmp_path: Path, seed: int, seg_size: int
) -> None:
    start = Lsn(seg_size)  # pg_waldump learns the segment size from the first file's header
    first = SyntheticWal(seed, start, seg_size + 300_000, seg_size=seg_size, system_id=seed)
    prev = continuation_prev_lsn(first.end_lsn, start)
    second = SyntheticWal(seed + 100, first.end_lsn, 200_000, seg_size=seg_size,
                          system_id=seed, prev_lsn=prev)
    data = first.read(0, first.size) + second.read(0, second.size)
    write_segments(tmp_path, start, data, seg_size)

    done = pg_waldump(tmp_path, start, second.end_lsn)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    parsed = [(Lsn.parse(m[1]), Lsn.parse(m[2])) for m in LINE.finditer(done.stdout)]
    assert len(parsed) == done.stdout.count("\n")  # every line is a NOOP record
    expected = [lsn for lsn, _ in first.record_lsns()] + [lsn for lsn, _ in second.record_lsns()]
    assert [lsn for lsn, _ in parsed] == expected
    assert [p for _, p in parsed] == [Lsn(0), *expected[:-1]]  # xl_prev chained throughout
    assert parsed[-1][0] == second.last_record_lsn


def test_pg_waldump_and_verify_name_the_same_record_for_a_flipped_byte(tmp_path: Path) -> None:
    start = Lsn(MiB)
    wal = SyntheticWal(9, start, 600_000, seg_size=MiB)
    data = bytearray(wal.read(0, wal.size))
    records = list(wal.record_lsns())
    victim, tot_len = records[len(records) // 2]
    data[victim - start + tot_len - 1] ^= 0x40  # the record's last byte
    write_segments(tmp_path, start, bytes(data), MiB)

    done = pg_waldump(tmp_path, start, wal.end_lsn)
    assert done.returncode != 0
    assert f"incorrect resource manager data checksum in record at {victim}" in done.stderr
    report = verify_chunks([bytes(data)], start, wal.end_lsn, MiB)
    assert report.corruption is not None
    assert (report.corruption.kind, report.corruption.lsn) == ("crc", victim)
