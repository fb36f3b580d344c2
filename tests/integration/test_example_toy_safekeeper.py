"""``examples/toy_safekeeper.py``: a safekeeper that is not ours (its own in-memory WAL and
state) embeds the recovery engine through the public API and recovers a timeline from real
``serve`` nodes (issue 13, item 7)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trio

from safekeeper_recovery.testing import DEFAULT_START_LSN, Cluster, MiB, make_ttid

from .recovery_support import assert_digests_equal, propose_args

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "toy_safekeeper.py"


async def run_toy(cluster: Cluster, *ids: int, timeout: float = 60.0) -> dict[str, object]:
    ttid = make_ttid(1)
    args = [sys.executable, str(EXAMPLE), "--tenant-id", str(ttid.tenant_id),
            "--timeline-id", str(ttid.timeline_id), "--start-lsn", str(DEFAULT_START_LSN),
            "--timeout", str(timeout)]
    for i in ids:
        args += ["--peer", f"{i}={cluster[i].http_url},{cluster[i].wal_url}"]
    with trio.fail_after(timeout + 30):
        done = await trio.run_process(args, capture_stdout=True, capture_stderr=True,
                                      check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    summary: dict[str, object] = json.loads(done.stdout.decode().splitlines()[-1])
    return summary


@pytest.mark.slow
async def test_the_toy_safekeeper_recovers_a_timeline_from_real_nodes(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3)
    ttid = make_ttid(1)
    try:
        await cluster.start()
        await cluster.create_timeline(ttid)
        result = await cluster.propose(*propose_args(cluster, ttid, str(8 * MiB)))
        assert result.returncode == 0, result.stderr
        end = DEFAULT_START_LSN + 8 * MiB
        node_digest = await assert_digests_equal(cluster, ttid, [1, 2, 3],
                                                 DEFAULT_START_LSN, end)
        history = (await cluster.status(1, ttid))["acceptor_state"]

        toy = await run_toy(cluster, 1, 2, 3)

        assert toy["flush_lsn"] == str(end), toy
        assert toy["sha256"] == node_digest, toy
        assert isinstance(history, dict)
        assert toy["term_history"] == [[e["term"], e["lsn"]] for e in history["term_history"]]
        assert toy["term"] == history["term"]
        assert toy["outcome"] == "caught_up", toy
    finally:
        await cluster.aclose()


@pytest.mark.slow
async def test_the_toy_recovers_from_the_one_peer_left_of_three(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3)
    ttid = make_ttid(1)
    try:
        await cluster.start()
        await cluster.create_timeline(ttid)
        result = await cluster.propose(*propose_args(cluster, ttid, str(4 * MiB)))
        assert result.returncode == 0, result.stderr
        end = DEFAULT_START_LSN + 4 * MiB
        node_digest = await cluster.digest(2, ttid, DEFAULT_START_LSN, end)
        await cluster[1].kill()
        await cluster[3].kill()

        # Nodes 1 and 3 refuse every status poll: node 2 is the only donor.
        toy = await run_toy(cluster, 1, 2, 3)

        assert toy["flush_lsn"] == str(end), toy
        assert toy["sha256"] == node_digest, toy
    finally:
        await cluster.aclose()
