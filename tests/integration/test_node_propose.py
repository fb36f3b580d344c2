"""Three real nodes and a real ``propose`` process: identical WAL, commit on a quorum."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.testing import DEFAULT_START_LSN, make_ttid

from .conftest import ClusterFactory
from .recovery_support import propose_args

TTID = make_ttid(1, tenant=0xD)


def summary_lsn(text: str, name: str) -> Lsn:
    m = re.search(rf"{name} ([0-9A-F]+/[0-9A-F]+)", text)
    assert m is not None, f"no {name} in {text!r}"
    return Lsn.parse(m.group(1))


@pytest.mark.slow
async def test_three_nodes_hold_identical_wal_and_commit_is_a_quorum_flush(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    await cluster.start()
    await cluster.create_timeline(TTID)
    result = await cluster.propose(*propose_args(cluster, TTID, "32MiB"))
    assert result.returncode == 0, result.stderr
    commit_lsn = summary_lsn(result.stdout, "commit_lsn")
    end_lsn = DEFAULT_START_LSN + 32 * 1024 * 1024
    assert commit_lsn == end_lsn

    flushes = [await cluster.flush_lsn(i, TTID) for i in (1, 2, 3)]
    # commit_lsn is the flush of a quorum: at least two nodes have flushed up to it.
    assert sorted(flushes, reverse=True)[1] >= commit_lsn
    digests = {
        i: await cluster.digest(i, TTID, DEFAULT_START_LSN, flushes[i - 1]) for i in (1, 2, 3)
    }
    assert set(flushes) == {end_lsn}, flushes
    assert len(set(digests.values())) == 1, digests


def _partial_segment_flags(pid: int) -> list[int]:
    """``open(2)`` flags of every ``.partial`` WAL segment the process holds open."""
    flags = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.endswith(".partial") and "/data/" in target:
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
            found = re.search(r"flags:\s+([0-7]+)", info)
            assert found is not None, info
            flags.append(int(found.group(1), 8))
    return flags


@pytest.mark.skipif(not hasattr(os, "O_DIRECT") or not Path("/proc/self/fdinfo").exists(),
                    reason="needs Linux O_DIRECT and /proc")
async def test_wal_is_written_with_o_direct_unless_turned_off(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(2)
    cluster[2].extra_args.append("--no-wal-direct-io")
    await cluster.start()
    await cluster.create_timeline(TTID)
    # 5,000,000 bytes: the run ends inside a segment, which each node then holds open.
    result = await cluster.propose(*propose_args(cluster, TTID, "5000000"))
    assert result.returncode == 0, result.stderr
    flushes = [await cluster.flush_lsn(i, TTID) for i in (1, 2)]
    assert flushes[0] == flushes[1] >= DEFAULT_START_LSN + 5_000_000
    pids = [cluster[i].process.pid for i in (1, 2)]  # type: ignore[union-attr]
    direct, buffered = (_partial_segment_flags(pid) for pid in pids)
    assert direct, "node 1 holds no open segment"
    assert buffered, "node 2 holds no open segment"
    assert all(f & os.O_DIRECT for f in direct), direct
    assert not any(f & os.O_DIRECT for f in buffered), buffered
    # Same bytes either way.
    assert (await cluster.digest(1, TTID, DEFAULT_START_LSN, flushes[0])
            == await cluster.digest(2, TTID, DEFAULT_START_LSN, flushes[1]))
