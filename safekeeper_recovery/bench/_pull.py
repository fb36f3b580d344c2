"""The pull figure: node 3, its disk empty, pulls the N-byte timeline from nodes 1 and 2.

Timed on node 3's clock from the pull's ``started_at`` to its ``finished_at`` (the
install's rename and load included, the donor choice too); the status is polled every
``RECOVERY_POLL`` seconds. It runs in the same rounds as the recovery figure, against
the same donors and the same WAL, so ``pull ÷ recovery`` compares like with like (goal
≥ 0.8: a snapshot should move WAL about as fast as recovery does).
"""

from __future__ import annotations

import attrs
import trio

from ..core import TenantTimelineId
from ..transport import SafekeeperClient
from ._cluster import RECOVERY_POLL, BenchCluster

__all__ = ["PullRun", "measure_pull"]


@attrs.frozen
class PullRun:
    bytes: int
    seconds: float
    attempts: int


async def measure_pull(bench: BenchCluster, ttid: TenantTimelineId,
                       timeout: float = 900.0) -> PullRun:
    """Node 3 from its snapshot *without* ``ttid`` pulls it from nodes 1 and 2; node 3 is
    stopped again afterwards. Raises ``RuntimeError`` if the pull fails."""
    node = bench.cluster[3]
    bench._restore_node3(None)
    await node.start()
    sources = [bench.cluster[i].http_url for i in (1, 2)]
    try:
        with trio.fail_after(timeout):
            async with SafekeeperClient(node.http_url) as client:
                status = await client.pull(ttid, sources)
                while status.get("state") not in ("done", "exists", "failed"):
                    await trio.sleep(RECOVERY_POLL)
                    status = await client.pull_status(ttid)
    finally:
        await node.stop()
    if status.get("state") != "done":
        raise RuntimeError(f"pull of {ttid} did not finish: {status}")
    started, finished = status.get("started_at"), status.get("finished_at")
    nbytes, attempts = status.get("bytes"), status.get("attempts")
    if not (isinstance(started, float) and isinstance(finished, float)
            and isinstance(nbytes, int) and isinstance(attempts, int)):
        raise RuntimeError(f"pull status of {ttid} lacks its times or bytes: {status}")
    return PullRun(nbytes, finished - started, attempts)
