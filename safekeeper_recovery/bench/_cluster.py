"""Three real ``serve`` processes set up once for the recovery, ingest and latency figures.

Nodes 1 and 2 (the donors) hold one *main* timeline of N bytes and one *small* one of N/4,
each under its own tenant; node 3 holds both timelines as created (empty). Node 3's data
dir is snapshotted while it is stopped, so every recovery round restores the snapshot
(keeping only the timeline under test), starts node 3, and times it catching up.
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from pathlib import Path

import attrs
import trio

from .._console import quieted
from ..core import Lsn, TenantId, TenantTimelineId, TimelineId
from ..testing import Cluster, NodeProcess
from ..transport import SafekeeperClient, parse_acceptor_state

__all__ = ["UNTHROTTLED", "BenchCluster", "IngestRun", "LatencyTrial", "RecoveryRun",
           "cpu_seconds", "peak_rss", "rss"]

START_LSN = Lsn.parse("0/1000000")
UNTHROTTLED = ("--recovery-max-rate", "0", "--recovery-serve-max-rate", "0")
"""Node arguments turning the recovery throttles off (their defaults are 128 MiB/s): the
throughput figures measure what the engine can do, not the default limit."""
POLL = 0.01
"""Status polling period (s): the resolution of every latency taken from outside a node."""
PROPOSER_WINDOW = 64 << 20
"""The bench proposer's window (WAL sent but not yet acknowledged flushed per node; its
default is 8 MiB). A node acknowledges once per fsync, and an fsync on this kind of
machine takes tens of milliseconds: with 8 MiB in flight the proposer spent most of its
time waiting for acknowledgements, so ingest measured fsync latency, not throughput.
PostgreSQL's walproposer keeps no such window at all (it sends all the WAL it has)."""
RECOVERY_POLL = 0.1
"""Status polling period (s) while timing a recovery: its end is the node's own
``recovery.flushed_at``, so polling need not be fast (every poll costs the measured node
an HTTP request; at 10 ms that was a tenth of its main thread)."""


def _proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} missing from /proc/{pid}/status")


def peak_rss(pid: int) -> int:
    """Peak resident set (VmHWM) in bytes."""
    return _proc_status(pid, "VmHWM")


def rss(pid: int) -> int:
    """Current resident set (VmRSS) in bytes."""
    return _proc_status(pid, "VmRSS")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat(5); index 0 here is field 3 (state).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _new_ttid() -> TenantTimelineId:
    return TenantTimelineId(TenantId(os.urandom(16)), TimelineId(os.urandom(16)))


def _lsn(status: dict[str, object], key: str) -> Lsn:
    return Lsn.parse(str(status[key]))


@attrs.frozen
class RecoveryRun:
    bytes: int
    seconds: float
    """From the attempt's start (``recovery.started_at``) to flush == donor flush."""
    seconds_from_start: float
    """From spawning node 3 to flush == donor flush (process start-up included)."""
    peak_rss: int
    recipient_cpu: float = 0.0
    """CPU seconds (user + system) of node 3 from its ready file to the end."""
    donor_cpu: float = 0.0
    """CPU seconds of nodes 1 and 2 together over the same span (one of them donates)."""


@attrs.frozen
class IngestRun:
    seconds: float
    """The proposer's wall time."""
    proposer_cpu: float
    """CPU seconds of the benchmark process (the proposer) while it ran."""
    node_cpu: tuple[float, ...]
    """CPU seconds of each node while it ran."""


@attrs.frozen
class LatencyTrial:
    detect: float
    """A donor becomes eligible (polled: its term == last_log_term and its position is
    past node 3's, which happens once the proposer's election reached it) → node 3's
    attempt starts streaming (``recovery.started_at``, after its vote and truncation)."""
    finish: float
    """Node 3 received the donor's last byte (``recovery.last_data_at``, node 3's clock)
    → its flush and commit_lsn equal the donor's (observed by polling, ``POLL``
    resolution)."""
    first_byte: float | None = None
    """A donor becomes eligible → node 3's attempt receives its first WAL byte (this
    includes the proposer writing it: eligibility comes with the election, before any
    new WAL exists)."""


@attrs.define
class BenchCluster:
    root: Path
    cluster: Cluster
    main: TenantTimelineId = attrs.Factory(_new_ttid)
    small: TenantTimelineId = attrs.Factory(_new_ttid)
    targets: dict[TenantTimelineId, Lsn] = attrs.Factory(dict)

    @classmethod
    def plan(cls, root: Path) -> BenchCluster:
        return cls(root, Cluster(root / "nodes", 3, peer_timing=(), ready_timeout=30.0,
                                 extra_args=UNTHROTTLED))

    @property
    def snapshot(self) -> Path:
        return self.root / "sk3-snapshot"

    async def setup(self, nbytes: int, small_bytes: int) -> None:
        """Start all, create both timelines everywhere, stop node 3, write WAL to {1, 2}."""
        for node in self.cluster.nodes.values():
            await node.start()
        for node in self.cluster.nodes.values():
            async with SafekeeperClient(node.http_url) as client:
                for ttid in (self.main, self.small):
                    await client.create_timeline(ttid, start_lsn=START_LSN)
        await self.cluster[3].stop()
        shutil.copytree(self.cluster[3].work_dir / "data", self.snapshot)
        for ttid, n in ((self.main, nbytes), (self.small, small_bytes)):
            await self.propose(ttid, n, nodes=(1, 2))
            async with SafekeeperClient(self.cluster[1].http_url) as client:
                self.targets[ttid] = _lsn(await client.timeline_status(ttid), "flush_lsn")

    async def propose(self, ttid: TenantTimelineId, nbytes: int, nodes: tuple[int, ...]
                      ) -> float:
        """Write ``nbytes`` to ``nodes`` with the test proposer; returns its wall time."""
        from ..proposer import ProposerConfig, propose, websocket_connector, websocket_fetcher

        urls = tuple(self.cluster[i].wal_url for i in nodes)
        t0 = time.perf_counter()
        # Absent nodes are expected here; their warnings would bury the table.
        with quieted("safekeeper_recovery.proposer"):
            await propose(
                ProposerConfig(urls, ttid.tenant_id, ttid.timeline_id, nbytes,
                               window_bytes=PROPOSER_WINDOW),
                websocket_connector(ttid.tenant_id, ttid.timeline_id),
                fetch_wal=websocket_fetcher(ttid.tenant_id, ttid.timeline_id),
            )
        return time.perf_counter() - t0

    def _restore_node3(self, keep: TenantTimelineId | None) -> None:
        data = self.cluster[3].work_dir / "data"
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(self.snapshot, data)
        for ttid in (self.main, self.small):
            if ttid != keep:
                shutil.rmtree(data / str(ttid.tenant_id))

    async def recover(self, ttid: TenantTimelineId, timeout: float = 900.0) -> RecoveryRun:
        """Node 3 from its empty snapshot recovers ``ttid``; stopped again afterwards.

        Timed from the attempt's ``recovery.started_at`` to its ``recovery.flushed_at`` (the
        node's clock: the moment it processed the reply of the flush that reached the donor's
        flush_lsn); the status is polled every ``RECOVERY_POLL`` seconds to see both.
        """
        node = self.cluster[3]
        self._restore_node3(ttid)
        target = self.targets[ttid]
        spawned = time.time()
        await node.start()
        assert node.process is not None
        donors = [self.cluster[i].process for i in (1, 2)]
        assert all(p is not None for p in donors)
        donor_pids = [p.pid for p in donors if p is not None]
        cpu0 = cpu_seconds(node.process.pid), sum(map(cpu_seconds, donor_pids))
        started_at: float | None = None
        try:
            with trio.fail_after(timeout):
                async with SafekeeperClient(node.http_url) as client:
                    while True:
                        status = await client.timeline_status(ttid)
                        now = time.time()
                        recovery = status.get("recovery")
                        if isinstance(recovery, dict) and recovery.get("started_at"):
                            started_at = float(recovery["started_at"])
                        if _lsn(status, "flush_lsn") >= target:
                            break
                        await trio.sleep(RECOVERY_POLL)
            assert node.process is not None
            peak = peak_rss(node.process.pid)
            recipient_cpu = cpu_seconds(node.process.pid) - cpu0[0]
            donor_cpu = sum(map(cpu_seconds, donor_pids)) - cpu0[1]
        finally:
            await node.stop()
        if started_at is None or not isinstance(recovery, dict):
            raise RuntimeError("node 3 caught up without reporting a recovery attempt")
        flushed_at = recovery.get("flushed_at")
        if isinstance(flushed_at, int | float) and Lsn.parse(
            str(recovery.get("flushed_lsn"))
        ) >= target:
            now = float(flushed_at)
        nbytes = int(target) - int(START_LSN)
        return RecoveryRun(nbytes, now - started_at, now - spawned, peak, recipient_cpu,
                           donor_cpu)

    async def ingest(self, nbytes: int) -> IngestRun:
        """A fresh timeline on all three (node 3 with no other timeline), ``propose``
        ``nbytes`` to the three; returns its wall time and CPU. Cleans up."""
        ttid = _new_ttid()
        node3 = self.cluster[3]
        self._restore_node3(None)
        await node3.start()
        try:
            for node in self.cluster.nodes.values():
                async with SafekeeperClient(node.http_url) as client:
                    await client.create_timeline(ttid, start_lsn=START_LSN)
            pids = [n.pid for n in self.cluster.nodes.values() if n.running]
            before = [cpu_seconds(pid) for pid in pids], _own_cpu_seconds()
            seconds = await self.propose(ttid, nbytes, nodes=(1, 2, 3))
            run = IngestRun(seconds, _own_cpu_seconds() - before[1],
                            tuple(cpu_seconds(pid) - c for pid, c in zip(pids, before[0],
                                                                          strict=True)))
            for node in self.cluster.nodes.values():
                async with SafekeeperClient(node.http_url) as client:
                    await client.delete_timeline(ttid)
        finally:
            await node3.stop()
        return run

    async def latency(self, trials: int, nbytes: int, timeout: float = 60.0
                      ) -> list[LatencyTrial]:
        """Node 3 up with a timeline; each trial a proposer writes ``nbytes`` to {1, 2}
        only, then node 3 must notice (detect) and catch up (finish)."""
        ttid = _new_ttid()
        node3 = self.cluster[3]
        self._restore_node3(None)
        await node3.start()
        results: list[LatencyTrial] = []
        try:
            for node in self.cluster.nodes.values():
                async with SafekeeperClient(node.http_url) as client:
                    await client.create_timeline(ttid, start_lsn=START_LSN)
            for _ in range(trials):
                results.append(await self._latency_trial(node3, ttid, nbytes, timeout))
            for node in self.cluster.nodes.values():
                async with SafekeeperClient(node.http_url) as client:
                    await client.delete_timeline(ttid)
        finally:
            await node3.stop()
        return results

    async def _latency_trial(self, node3: NodeProcess, ttid: TenantTimelineId, nbytes: int,
                             timeout: float) -> LatencyTrial:
        async with SafekeeperClient(node3.http_url) as client:
            before = await client.timeline_status(ttid)
            old_start = _started_at(before)
        mine = _position(before)
        eligible: float | None = None

        async def watch_donors() -> None:
            nonlocal eligible
            clients = [SafekeeperClient(self.cluster[i].http_url) for i in (1, 2)]
            try:
                while eligible is None:
                    for donor in clients:
                        status = await donor.timeline_status(ttid)
                        term, _history = parse_acceptor_state(status)
                        if term == _position(status)[0] and _position(status) > mine:
                            eligible = time.time()
                            break
                    else:
                        await trio.sleep(POLL)
            finally:
                for donor in clients:
                    await donor.aclose()

        with trio.fail_after(timeout):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_donors)
                await self.propose(ttid, nbytes, nodes=(1, 2))
        assert eligible is not None
        async with SafekeeperClient(self.cluster[1].http_url) as donor:
            dstatus = await donor.timeline_status(ttid)
        flush, commit = _lsn(dstatus, "flush_lsn"), _lsn(dstatus, "commit_lsn")
        with trio.fail_after(timeout):
            async with SafekeeperClient(node3.http_url) as client:
                while True:
                    status = await client.timeline_status(ttid)
                    now = time.time()
                    if (_lsn(status, "flush_lsn") >= flush
                            and _lsn(status, "commit_lsn") >= commit):
                        break
                    await trio.sleep(POLL)
        started, recovery = _started_at(status), status.get("recovery")
        if started is None or started == old_start or not isinstance(recovery, dict):
            raise RuntimeError("node 3 caught up without a new recovery attempt")
        last_data_at = float(str(recovery["last_data_at"]))
        first = recovery.get("first_data_at")
        return LatencyTrial(detect=started - eligible, finish=now - last_data_at,
                            first_byte=None if first is None else float(str(first)) - eligible)

    async def stop(self) -> None:
        with trio.CancelScope(shield=True):
            await self.cluster.aclose()


def _position(status: dict[str, object]) -> tuple[int, Lsn]:
    """``(last_log_term, flush_lsn)`` from a timeline status: what donors are ranked by."""
    return int(str(status["last_log_term"])), _lsn(status, "flush_lsn")


def _started_at(status: dict[str, object]) -> float | None:
    recovery = status.get("recovery")
    if isinstance(recovery, dict) and recovery.get("started_at"):
        return float(recovery["started_at"])
    return None
