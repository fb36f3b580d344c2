"""Findings of the fault campaign (docs/faults.md, "Findings"), each pinned by a
deterministic test. A finding not fixed yet is a strict xfail that names the exception it
fails with: fixing it makes the test pass, and strict turns that into a failure that says to
drop the mark."""

from __future__ import annotations

import pytest

from safekeeper_recovery.core import Lsn, TenantId, TermHistory, TermLsn, TimelineId
from safekeeper_recovery.pgwal import verify_chunks
from safekeeper_recovery.proposer import Election, ProposerConfig, wal_source_factory

START = Lsn(0x1000000)
SEG = 1 << 20
F1 = "F1 (docs/faults.md): generated pg WAL cannot continue after a proposer died in a record"


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(100_001, id="unaligned-cut-refused",
                     marks=pytest.mark.xfail(strict=True, raises=ValueError, reason=F1)),
        pytest.param(100_000, id="aligned-cut-written-over",
                     marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=F1)),
    ],
)
def test_f1_generated_pg_wal_continues_after_a_proposer_died_inside_a_record(cut: int) -> None:
    """A proposer killed mid-run leaves the quorum's WAL ending inside a record (``cut``
    bytes into the run); the next ``propose --wal-format pg`` must write WAL from there that
    ``verify`` accepts. Today it refuses an unaligned start (S1) and starts a new record
    in the middle of the torn one at an aligned start."""
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
