"""Peer recovery between real processes when the donor changes under it: its term is
bumped mid-stream, or it is SIGKILLed mid-stream. Either way recovery resumes from the
other peer and completes.

To hit the stream in the middle deterministically the recovering node is SIGSTOPped
(:func:`frozen`) while the fault is injected: the donor's socket buffers stay full, so the
fault lands mid-stream however fast the machine is.
"""

from __future__ import annotations

import pytest

from safekeeper_recovery.core import TenantTimelineId
from safekeeper_recovery.testing import DEFAULT_START_LSN, Cluster, MiB, make_ttid, run_cli

from .conftest import ClusterFactory
from .recovery_support import (
    assert_digests_equal,
    attempts_logged,
    frozen,
    propose_args,
    wait_caught_up_with,
    wait_mid_recovery,
    wait_recovery,
)

DATA = "64MiB"


async def lagging_sk3(make_cluster: ClusterFactory, ttid: TenantTimelineId) -> Cluster:
    """sk1+sk2 hold DATA that sk3 (down meanwhile) lacks; sk3 is started again."""
    cluster = make_cluster(3)
    await cluster.start()
    await cluster.create_timeline(ttid)
    await cluster[3].terminate()
    result = await run_cli("propose", *propose_args(cluster, ttid, DATA, ids=[1, 2]), timeout=90)
    assert result.returncode == 0, result.stderr
    assert await cluster.flush_lsn(1, ttid) == DEFAULT_START_LSN + 64 * MiB
    await cluster[3].start()
    return cluster


@pytest.mark.slow
async def test_donor_term_bumped_mid_recovery_resumes_from_the_other_peer(
    make_cluster: ClusterFactory,
) -> None:
    ttid = make_ttid(11)
    cluster = await lagging_sk3(make_cluster, ttid)
    rec = await wait_mid_recovery(cluster, 3, ttid)
    donor = rec.donor
    assert donor in (1, 2), rec
    other = 3 - donor
    async with frozen(cluster[3]):
        async with cluster[donor].client() as client:
            previous, current = await client.term_bump(ttid)
        assert current == previous + 1

    end = await wait_caught_up_with(cluster, 3, other, ttid, timeout=60)
    rec = await wait_recovery(cluster, 3, ttid, lambda r: r.last_outcome == "caught_up",
                              15, "sk3's recovery to end as caught_up")
    assert rec.attempts >= 2, rec
    logged = attempts_logged(cluster[3])
    assert logged[0] == (donor, "term_changed"), logged
    assert logged[-1] == (other, "caught_up"), logged
    await assert_digests_equal(cluster, ttid, [other, 3], DEFAULT_START_LSN, end)
    # a term bump moves no WAL
    await assert_digests_equal(cluster, ttid, [donor, 3], DEFAULT_START_LSN, end)


@pytest.mark.slow
async def test_donor_killed_mid_stream_fails_over_to_the_other_peer(
    make_cluster: ClusterFactory,
) -> None:
    ttid = make_ttid(12)
    cluster = await lagging_sk3(make_cluster, ttid)
    rec = await wait_mid_recovery(cluster, 3, ttid)
    donor = rec.donor
    assert donor in (1, 2), rec
    other = 3 - donor
    async with frozen(cluster[3]):
        await cluster[donor].kill()

    end = await wait_caught_up_with(cluster, 3, other, ttid, timeout=60)
    rec = await wait_recovery(cluster, 3, ttid, lambda r: r.last_outcome == "caught_up",
                              15, "sk3's recovery to end as caught_up")
    logged = attempts_logged(cluster[3])
    assert logged[0][0] == donor, logged
    assert logged[0][1] in {"donor_error", "timeout"}, logged
    assert logged[-1] == (other, "caught_up"), logged
    assert rec.donor == other, rec
    await assert_digests_equal(cluster, ttid, [other, 3], DEFAULT_START_LSN, end)
