"""Findings of the fault campaign (docs/faults.md, "Findings"), each pinned by a
deterministic test. A finding not fixed yet is a strict xfail that names the exception it
fails with: fixing it makes the test pass, and strict turns that into a failure that says to
drop the mark."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from safekeeper_recovery.core import Lsn, TenantId, TermHistory, TermLsn, TimelineId
from safekeeper_recovery.faults import PROPOSER, open_cluster, unavailable_reason
from safekeeper_recovery.pgwal import verify_chunks
from safekeeper_recovery.proposer import Election, ProposerConfig, wal_source_factory

START = Lsn(0x1000000)
CONNECT_TIMEOUT = 30.0
SEG = 1 << 20


@pytest.mark.parametrize("cut", [100_001, 100_000, 65_536 - 10, 65_536, 65_536 + 30, 131_072 + 5])
def test_f1_generated_pg_wal_continues_after_a_proposer_died_inside_a_record(cut: int) -> None:
    """A proposer killed mid-run leaves the quorum's WAL ending inside a record (``cut``
    bytes into the run); the next ``propose --wal-format pg`` must write WAL from there that
    ``verify`` accepts. It used to refuse an unaligned start (S1), and to start a new record
    in the middle of the torn one at an aligned start; now it first completes the torn
    record (pgwal's rule C2). Cuts inside a record, inside the trailer before a clean point,
    at one, and inside the page header after one."""
    config = ProposerConfig(
        ("ws://127.0.0.1:1",), TenantId.parse("5d" * 16), TimelineId.parse("c0" * 16),
        256 * 1024, seed=5, wal_format="pg", wal_seg_size=SEG,
    )
    factory = wal_source_factory(config)
    first = factory(Election(1, "", 0, START, TermHistory([TermLsn(1, START)]), START, {}))
    end = Lsn(START + cut)
    history = TermHistory([TermLsn(1, START), TermLsn(2, end)])
    second = factory(Election(2, "", 1, end, history, end, {}))
    wal = first.read(0, cut) + second.read(0, second.size)
    report = verify_chunks([wal], START, Lsn(START + len(wal)), SEG,
                           system_id=config.pg_system_id())
    assert report.ok, report.summary()


@pytest.mark.slow
def test_f2_an_election_does_not_wait_for_a_black_holed_node(tmp_path: Path) -> None:
    """Nodes 1 and 2 answer at once; node 3 is black-holed (every packet to and from it
    dropped, so a connect to it hangs until ``--connect-timeout``, here 30 s). A quorum
    answered, so a short run must not take anywhere near that long (the bound is half of
    it: a loaded machine's process start-up fits many times, the bug does not). The
    proposer used to campaign only once every node's connect had ended, and elected only
    once every greeted node voted (fixed by rule P6 of the proposer: a quorum and a short
    grace).

    Finding F2 (docs/faults.md). Sync, with its own ``trio.run``, so that a failure reaches
    pytest as a plain AssertionError rather than wrapped in an ExceptionGroup."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"the fault campaign cannot run here: {reason}")
    took = trio.run(run_with_node_3_black_holed, tmp_path)
    assert took < CONNECT_TIMEOUT / 2, (
        f"a run elected by nodes 1 and 2 took {took:.1f}s (node 3 black-holed)")


async def run_with_node_3_black_holed(tmp_path: Path) -> float:
    """Seconds a 64 KiB ``propose`` takes while node 3 is cut off from everyone."""
    async with open_cluster(f"{os.getpid() & 0xFFFF:04x}", 3, tmp_path) as cluster:
        for other in (PROPOSER, 1, 2):
            cluster.net.drop(3, other)
            cluster.net.drop(other, 3)
        began = trio.current_time()
        argv = [*cluster.propose_argv(nbytes=64 * 1024, seed=1),
                "--connect-timeout", f"{CONNECT_TIMEOUT:g}s"]
        result = await trio.run_process(argv,
                                        capture_stdout=True, capture_stderr=True, check=False)
        took = trio.current_time() - began
    if result.returncode != 0:
        pytest.fail(f"propose failed: {result.stderr.decode(errors='replace')}")
    return took
