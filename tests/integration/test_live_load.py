"""Recovery under live load (issue 12): a proposer streaming to real node processes is never
stopped, slowed into refusals or disturbed by peer recovery.

Two deterministic tests make each defect's moment certain with an in-process proposer whose
connection to node 3 is held at the exact step (the nodes are real processes on loopback):

* an elected proposer meets a node that peer recovery already put in its term (defect 1);
* a proposer that has only *voted* on node 3, with the others already streaming, keeps node
  3's recovery off until its ProposerElected arrives (defect 2).

Then the randomised ones, each repeated (``LIVE_LOAD_ROUNDS``, default 20; the seed is
printed and ``LIVE_LOAD_SEED`` replays it): node 3 killed and restarted over and over while
``propose --rate`` streams generated WAL, and a healthy cluster where ``propose`` on a new
timeline never sets off recovery (throughput reported next to a ``--no-recovery`` cluster).
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from safekeeper_recovery.core import (
    AcceptorMessage,
    Lsn,
    ProposerElected,
    ProposerMessage,
)
from safekeeper_recovery.proposer import (
    Proposer,
    ProposerConfig,
    ProposeResult,
    SafekeeperConnection,
    paced,
    wal_source_factory,
    websocket_connector,
    websocket_fetcher,
)
from safekeeper_recovery.testing import (
    DEFAULT_START_LSN,
    SEG_SIZE,
    BackgroundCli,
    Cluster,
    MiB,
    make_ttid,
    wait_until,
)

from .conftest import ClusterFactory
from .recovery_support import assert_digests_equal, propose_args, recovery_of

TTID = make_ttid(1, tenant=5)
ROUNDS = int(os.environ.get("LIVE_LOAD_ROUNDS", "20"))
REFUSALS = ("refused", "term already taken", "R3:", "R7:", "newer term")
"""What a proposer's log or a node's log says when a proposer is refused."""


def _config(cluster: Cluster, total: int) -> ProposerConfig:
    urls = tuple(cluster[i].wal_url for i in (1, 2, 3))
    return ProposerConfig(urls, TTID.tenant_id, TTID.timeline_id, total, seed=5,
                          wal_seg_size=SEG_SIZE, reconnect_min=0.05, reconnect_max=0.2,
                          lost_quorum_timeout=30.0, drain_timeout=30.0)


class _Holding:
    """A proposer's connection to one node whose sends of one message type wait for
    ``release`` (the moment a test needs is then certain, not raced)."""

    def __init__(self, inner: SafekeeperConnection, hold: type, release: trio.Event) -> None:
        self._inner = inner
        self._hold = hold
        self._release = release
        self.held = trio.Event()

    async def send(self, msg: ProposerMessage) -> None:
        if isinstance(msg, self._hold):
            self.held.set()
            await self._release.wait()
        await self._inner.send(msg)

    async def receive(self) -> AcceptorMessage:
        return await self._inner.receive()

    async def aclose(self) -> None:
        await self._inner.aclose()


def _node_logs(cluster: Cluster, node_id: int) -> list[dict[str, object]]:
    """Every JSON log event of the node, all its runs (one stderr file per start)."""
    events = []
    for path in sorted(cluster[node_id].work_dir.glob("stderr.*.log")):
        for line in path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
    return events


def _proposer_refusals(cluster: Cluster) -> list[str]:
    """Refusals the nodes sent to proposers (the WAL port logs each 4009 close)."""
    return [str(e["event"]) for i in cluster.nodes for e in _node_logs(cluster, i)
            if str(e.get("event", "")).startswith("WAL push from")
            and "refused" in str(e["event"])]


@pytest.mark.slow
async def test_an_elected_proposer_lets_a_node_that_recovered_into_its_term_join(
    make_cluster: ClusterFactory,
) -> None:
    """Defect 1: node 3 is out of the proposer's reach (a partition between the two only)
    while the proposer is elected on {1, 2} and streams; node 3 comes back and catches up
    by peer recovery, so it votes locally in the proposer's own term. When the proposer then
    reaches it, node 3 refuses its vote (already in that term) and must join the stream;
    before the fix the proposer stopped with "term already taken"."""
    cluster = make_cluster(3)
    await cluster.start()
    await cluster.create_timeline(TTID)
    await cluster[3].kill()
    reachable = trio.Event()
    connect = websocket_connector(TTID.tenant_id, TTID.timeline_id)

    @asynccontextmanager
    async def partitioned(url: str) -> AsyncIterator[SafekeeperConnection]:
        if url == cluster[3].wal_url and not reachable.is_set():
            raise ConnectionRefusedError(f"{url}: partitioned from the proposer (test)")
        async with connect(url) as conn:
            yield conn

    total = 48 * MiB
    config = _config(cluster, total)
    proposer = Proposer(config, partitioned,
                        fetch_wal=websocket_fetcher(TTID.tenant_id, TTID.timeline_id),
                        wal_source=paced(wal_source_factory(config), 4 * MiB))
    results: list[ProposeResult] = []
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            async def run() -> None:
                results.append(await proposer.run())

            nursery.start_soon(run)
            await wait_until(lambda: proposer.statistics().term is not None
                             and proposer.statistics().phase == "streaming", 30,
                             message="the proposer to be elected on {1, 2}")
            term = proposer.statistics().term
            await cluster[3].start()

            async def recovered_into_our_term() -> bool:
                status = await cluster.timeline_status(3, TTID)
                return status.term == term and status.flush_lsn > DEFAULT_START_LSN + 2 * MiB

            await wait_until(recovered_into_our_term, 60,
                             message="node 3 to catch up by peer recovery into our term")
            assert proposer.statistics().phase in ("streaming", "finishing")  # elected
            reachable.set()
    [result] = results
    assert result.term == term
    assert result.commit_lsn == result.end_lsn == DEFAULT_START_LSN + total
    # Node 3 joined the stream: the drain waited for it to hold everything.
    assert result.flush_lsns[cluster[3].wal_url] == result.end_lsn
    await assert_digests_equal(cluster, TTID, [1, 2, 3], DEFAULT_START_LSN, result.end_lsn)


@pytest.mark.slow
async def test_a_voted_proposer_keeps_recovery_off_the_node_mid_election(
    make_cluster: ClusterFactory,
) -> None:
    """Defect 2: the proposer's ProposerElected to node 3 is held after node 3 voted, while
    nodes 1 and 2 already stream in the new term (so they are ahead of node 3 by
    last_log_term and look like donors). Node 3 must start no recovery: it would adopt the
    donor's history and the proposer's own ProposerElected and appends would then be
    refused (R3, R7), as seen in 2 of 7 healthy runs before the fix."""
    cluster = make_cluster(3)
    await cluster.start()
    await cluster.create_timeline(TTID)
    release = trio.Event()
    held: list[_Holding] = []
    connect = websocket_connector(TTID.tenant_id, TTID.timeline_id)

    @asynccontextmanager
    async def holding(url: str) -> AsyncIterator[SafekeeperConnection]:
        async with connect(url) as conn:
            if url != cluster[3].wal_url:
                yield conn
                return
            wrapped = _Holding(conn, ProposerElected, release)
            held.append(wrapped)
            yield wrapped

    total = 16 * MiB
    config = _config(cluster, total)
    # Paced over 8 s: the run must still be on while node 3 is watched (a run that ended
    # closes its connections, and then recovery is node 3's right).
    proposer = Proposer(config, holding,
                        fetch_wal=websocket_fetcher(TTID.tenant_id, TTID.timeline_id),
                        wal_source=paced(wal_source_factory(config), 2 * MiB))
    results: list[ProposeResult] = []
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            async def run() -> None:
                results.append(await proposer.run())

            nursery.start_soon(run)
            await wait_until(lambda: bool(held) and held[0].held.is_set(), 30,
                             message="the proposer's ProposerElected to node 3 to be held")

            async def others_ahead() -> bool:
                status = await cluster.status(3, TTID)
                peers = status["peers"]
                assert isinstance(peers, list)
                mine = status["last_log_term"]
                return len(peers) == 2 and all(p["last_log_term"] > mine for p in peers)

            # Node 3 hears of the others' new last_log_term (peer info goes out on change),
            # so without the fix its recovery would start now.
            await wait_until(others_ahead, 30, message="node 3 to see nodes 1, 2 ahead")
            status = await cluster.status(3, TTID)
            assert status["connected_proposers"] == 1, status["walreceivers"]
            # Give recovery every chance it would have had (its fallback tick included).
            deadline = trio.current_time() + 3.0
            while trio.current_time() < deadline:
                recovery = await recovery_of(cluster, 3, TTID)
                if recovery.attempts != 0:
                    pytest.fail(json.dumps(await cluster.status(3, TTID), indent=1))
                await trio.sleep(0.1)
            assert not results, "the run ended before node 3 was watched"
            release.set()
    [result] = results
    assert result.commit_lsn == DEFAULT_START_LSN + total
    assert result.flush_lsns[cluster[3].wal_url] == result.end_lsn
    assert _proposer_refusals(cluster) == []
    await assert_digests_equal(cluster, TTID, [1, 2, 3], DEFAULT_START_LSN, result.end_lsn)


def _seed() -> int:
    seed = int(os.environ.get("LIVE_LOAD_SEED", str(random.randrange(1 << 30))))
    print(f"replay with LIVE_LOAD_SEED={seed}")
    return seed


def _stop_reasons(stderr: str) -> list[str]:
    """Lines of a proposer's stderr that say it was refused or told to stop."""
    marks = ("term already taken", "newer term", "R3:", "R7:", "code 4009", "Traceback")
    return [line for line in stderr.splitlines()
            if line.startswith("Error:") or any(m in line for m in marks)]


def _recovery_outcomes(cluster: Cluster, node_id: int) -> list[str]:
    return [str(e.get("outcome")) for e in _node_logs(cluster, node_id)
            if e.get("event") == "recovery attempt ended"]


async def _finish(run: BackgroundCli) -> None:
    """A ``propose`` run must end by itself, exit 0, and never have been refused."""
    done = await run.wait(timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _stop_reasons(done.stderr) == [], done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(900)  # 20 restarts of a node process: minutes on a loaded machine
async def test_a_node_rejoining_under_load_never_disturbs_the_proposer(
    make_cluster: ClusterFactory,
) -> None:
    """Node 3 is SIGKILLed and restarted ``ROUNDS`` times at random moments while
    ``propose --rate`` streams (a new run starts whenever one finishes, so some rejoins
    meet an election): no run is stopped or refused, node 3 catches up every time, and all
    three nodes end byte-identical."""
    rng = random.Random(_seed())
    cluster = make_cluster(3)
    await cluster.start()
    await cluster.create_timeline(TTID)
    runs: list[BackgroundCli] = []

    async def streaming() -> None:
        if runs and runs[-1].process.poll() is None:
            return
        if runs:
            await _finish(runs[-1])
        args = propose_args(cluster, TTID, "24MiB", "--rate", "6MiB", "--seed", str(len(runs)),
                            "--lost-quorum-timeout", "30s")
        runs.append(await cluster.start_propose(f"propose{len(runs)}", *args))

    for _ in range(ROUNDS):
        await streaming()
        # The random pauses are the test's input (where in the stream node 3 dies and how
        # long it stays down), not waits for something to happen.
        await trio.sleep(rng.uniform(0.0, 0.8))
        await cluster[3].kill()
        await trio.sleep(rng.uniform(0.1, 1.5))
        await cluster[3].start()
        target = await cluster.flush_lsn(1, TTID)

        async def caught_up(target: Lsn = target) -> bool:
            return await cluster.flush_lsn(3, TTID) >= target

        await wait_until(caught_up, 60, message=f"node 3 to catch up to {target}")
    await _finish(runs[-1])

    print(f"{len(runs)} proposer runs; node 3's recovery attempts ended as "
          f"{_recovery_outcomes(cluster, 3)}")
    assert _proposer_refusals(cluster) == []
    flushes = {i: await cluster.flush_lsn(i, TTID) for i in (1, 2, 3)}
    assert len(set(flushes.values())) == 1, flushes
    await assert_digests_equal(cluster, TTID, [1, 2, 3], DEFAULT_START_LSN, flushes[1])


@pytest.mark.slow
@pytest.mark.timeout(900)  # 40 proposer processes: minutes on a loaded machine
async def test_a_healthy_cluster_never_recovers_and_keeps_its_throughput(
    make_cluster: ClusterFactory,
) -> None:
    """``ROUNDS`` runs of ``propose`` on a freshly created timeline each (a new election on
    three idle nodes, where recovery once started mid-election): no node ever starts a
    recovery attempt. Each run is interleaved with the same run on a ``--no-recovery``
    cluster; both throughputs are printed (measured, not asserted: speed belongs to the
    benchmark, and this machine's other load moves it)."""
    with_recovery = make_cluster(3)
    without = make_cluster(3, extra_args=["--no-recovery"])
    await with_recovery.start()
    await without.start()
    rates: dict[str, list[float]] = {"recovery on": [], "--no-recovery": []}
    for i in range(ROUNDS):
        ttid = make_ttid(i, tenant=6)
        for name, cluster in (("recovery on", with_recovery), ("--no-recovery", without)):
            await cluster.create_timeline(ttid)
            done = await cluster.propose(*propose_args(cluster, ttid, "16MiB"))
            assert done.returncode == 0, done.stderr[-3000:]
            assert _stop_reasons(done.stderr) == [], done.stderr[-3000:]
            rate = re.search(r"\(([0-9.]+) MiB/s\)", done.stdout)
            assert rate is not None, done.stdout
            rates[name].append(float(rate.group(1)))
    for node_id in (1, 2, 3):
        assert _recovery_outcomes(with_recovery, node_id) == []
        assert not [e for e in _node_logs(with_recovery, node_id)
                    if e.get("event") == "starting recovery"]
    assert _proposer_refusals(with_recovery) == []
    for name, values in rates.items():
        print(f"{name}: median {statistics.median(values):.1f} MiB/s over {len(values)} runs "
              f"(min {min(values):.1f}, max {max(values):.1f}; the proposer's own figure, "
              "election to commit)")
