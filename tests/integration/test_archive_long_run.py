"""The long run of issue 14: N bytes through three real nodes archiving to ``file://`` on
16 MiB segments; each node's WAL on disk stays within the whole segments that were not
archived or not yet on every live peer 2 s earlier, through the one being written, at
every sample (exactly what rule L3 keeps), the archive catches up, every node removes what
it archived, and every archived segment is byte-identical to the WAL the
proposer wrote (``bench/_archive.py``, rules B1-B5). 256 MiB runs in the suite; the 4 GiB
run is opt-in (``SAFEKEEPER_LONG_RUN=1 pytest -m long_run``) and its figures are in
docs/archive.md."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safekeeper_recovery.bench import ARCHIVE_SEG_SIZE, REMOVAL_GRACE, run_archive
from safekeeper_recovery.testing import MiB

SUITE_REMOVAL_GRACE = 5.0
"""The short run's grace (B2): on a 2-core CI machine at load 9, a node's lifecycle step
was seen to act on news 2-3 s late, so the suite allows 5 s; the 4 GiB run and the
benchmark keep the 2 s their figures were taken with."""


async def long_run(root: Path, nbytes: int, removal_grace: float = REMOVAL_GRACE) -> None:
    run = await run_archive(root, nbytes, removal_grace=removal_grace)
    print(run.summary())  # the figures, for docs/archive.md (pytest -s)
    assert run.samples, "nothing was sampled"
    # Samples were taken all along the run, not only at its end.
    assert len({s.at // 1 for s in run.samples}) >= min(5, run.ingest_seconds), run.summary()
    assert not run.violations, (run.violations[:5], run.summary())
    assert run.archived_segments == (nbytes - nbytes % ARCHIVE_SEG_SIZE) // ARCHIVE_SEG_SIZE \
        or run.archived_segments == nbytes // ARCHIVE_SEG_SIZE - 1, run.summary()
    assert run.verified_segments == run.archived_segments, (run.mismatched, run.summary())
    assert not run.extra_objects, run.extra_objects
    # Once the archive caught up, every node holds at most the segment being written.
    for node in (1, 2, 3):
        settled = [s for s in run.samples if s.node == node][-1]
        assert settled.disk_bytes <= ARCHIVE_SEG_SIZE, (settled, run.summary())
    if nbytes >= 1024 * MiB:  # far more went through than any node ever held
        assert max(run.peak_disk(n) for n in (1, 2, 3)) < nbytes // 4, run.summary()
    assert run.removed_segments >= 3 * (run.archived_segments - 1), run.summary()
    assert run.ok


@pytest.mark.slow
async def test_256_mib_through_three_nodes_stays_bounded_and_archives_every_byte(
    tmp_path: Path,
) -> None:
    await long_run(tmp_path, 256 * MiB, SUITE_REMOVAL_GRACE)


@pytest.mark.long_run
@pytest.mark.timeout(3600)
@pytest.mark.skipif(os.environ.get("SAFEKEEPER_LONG_RUN") != "1",
                    reason="the 4 GiB long run is opt-in: SAFEKEEPER_LONG_RUN=1")
async def test_4_gib_through_three_nodes_stays_bounded_and_archives_every_byte(
    tmp_path: Path,
) -> None:
    await long_run(tmp_path, 4096 * MiB)
