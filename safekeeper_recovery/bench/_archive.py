"""The WAL lifecycle under load: three nodes archiving and removing while a proposer writes.

One :func:`run_archive` writes N bytes through three real ``serve`` processes started with
``--archive`` and measures what issue 14 asks of the lifecycle; the benchmark runs it once
per round next to the same ingest without an archive, and the long-run test runs it at
4 GiB (``tests/integration/test_archive_long_run.py``).

Rules
-----
B1  The WAL is the proposer's pseudo-random stream (``WalGenerator``, seed 0) from the
    timeline's start, a segment boundary, on ``seg_size`` segments (16 MiB by default),
    written with the bench proposer's window to all three nodes.
B2  Every ``sample_interval`` seconds, while the proposer writes and until the archive has
    caught up, each node's WAL on disk (the sizes of its segment files, ``.partial`` and a
    ``waltmp`` being made included) is read between two reads of its status, and checked
    against what rule L3 lets the node keep, counted the way the node keeps it: in whole
    segments. Every segment file is created full-size (``posix_fallocate``) when the
    first byte goes into it and removed whole, so the disk holds whole segments, not
    bytes of WAL: the segment being written counts 16 MiB with a few bytes in it, and the
    one the hold is in counts whole with its last byte still needed. ``held`` is the
    segments from the one holding the node's *hold* as of ``removal_grace`` seconds before
    the disk was read, through the one holding the last byte the node accepted (its write
    position, read after the disk: the node's ``wal_disk_bytes`` from its ``removal
    horizon``; WAL is on disk as soon as it is written, before ``flush_lsn`` covers it, so
    on an idle machine the written end runs segments ahead of ``flush_lsn``; bytes still in
    the node's write batch, a few MiB handed to the disk by a segment's end at the latest,
    count in the segment they go to). The hold is min(its ``commit_lsn``, its
    ``backup_lsn``, the ``flush_lsn`` of each peer as it heard it) (at least the
    timeline's start), as in L3: what is not archived yet or not yet on every live peer
    (the peer hold: a peer that lags by the proposer's window keeps that much on the
    others). The bound checked at *every* sample is ``held + bound_segments *
    seg_size``, ``bound_segments`` 0 by default: exact. The grace lets removal act on
    news: a non-uploader learns ``backup_lsn`` from peer info (every second; several
    segments at once after a stall) and removes after the coalescing delay and the
    timeline lock, which WAL appends and fsyncs hold on a busy machine. A sample above
    the bound is a violation: a node that kept a segment more than ``removal_grace``
    seconds after L3 let it go. ``unarchived`` (flush - backup_lsn at that moment, bytes)
    is recorded too, to report how much beyond it a node held.
B3  Once the proposer is done, the run waits (with a deadline) until every node's
    ``backup_lsn`` and removal horizon reach the last complete segment: the archive caught
    up and every node removed what it archived.
B4  Every archived object is compared byte for byte with the WAL regenerated from the seed
    (B1) and the archive holds exactly the complete segments: none missing, none extra.
B5  Upload throughput is ``uploaded_bytes / upload_seconds`` over the nodes (their busy
    time in this run: read, put, verify); its ratio to the ingest throughput of the same
    run says whether uploads keep up (>= 1.0). Removal cost: segments removed per second
    of removal time, and the ingest throughput with the lifecycle on against the same run
    without ``--archive`` (:func:`run_plain_ingest`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Final

import attrs
import trio
from rich.console import Console

from .._console import quieted
from ..core import Lsn, TenantId, TenantTimelineId, TimelineId
from ..storage import open_archive, segment_key
from ..testing import Cluster
from ..transport import SafekeeperClient
from ._cluster import PROPOSER_WINDOW, START_LSN
from ._stats import Samples, ratio

__all__ = [
    "ARCHIVE_SEG_SIZE",
    "ArchiveFigures",
    "ArchiveRun",
    "DiskSample",
    "kept_bytes",
    "archive_round",
    "run_archive",
    "run_plain_ingest",
]

ARCHIVE_SEG_SIZE: Final = 16 << 20
BOUND_SEGMENTS: Final = 0
"""B2's segments allowed beyond what L3 keeps, counted in whole segments: none, the bound is
exact (see the module docstring; docs/archive.md states the bound)."""
REMOVAL_GRACE: Final = 2.0
"""B2: seconds a node gets to remove what it learned is archived (twice the peer push
interval)."""
SEED: Final = 0


@attrs.frozen
class DiskSample:
    """One node at one moment (B2): its WAL on disk and the bound it must stay below."""

    at: float
    """Seconds since the proposer started."""
    node: int
    disk_bytes: int
    """Sizes of its segment files (each full-size: whole segments)."""
    unarchived: int
    """flush_lsn - backup_lsn (bytes of WAL, not segments)."""
    held: int
    """What rule L3 keeps, in whole segments (bytes): from the segment holding the hold
    (min(commit_lsn, backup_lsn, every peer's flush_lsn)) ``removal_grace`` seconds
    earlier through the segment holding the last byte accepted (:func:`kept_bytes`)."""
    bound: int
    hold: Lsn
    """The hold ``held`` starts from (``removal_grace`` seconds before the disk read)."""
    written_end: Lsn
    """The end of the segment holding its last accepted byte (its write position rounded up
    to a segment end)."""
    flush_lsn: Lsn
    """Its flush position (read after the disk, like ``written_end``)."""


@attrs.define
class ArchiveRun:
    """What one :func:`run_archive` measured."""

    nbytes: int
    seg_size: int
    bound_segments: int
    removal_grace: float = REMOVAL_GRACE
    ingest_seconds: float = 0.0
    catch_up_seconds: float = 0.0
    """From the proposer's end until the archive and every node's removal caught up (B3)."""
    uploaded_bytes: int = 0
    upload_seconds: float = 0.0
    removed_segments: int = 0
    removal_seconds: float = 0.0
    archived_segments: int = 0
    verified_segments: int = 0
    samples: list[DiskSample] = attrs.Factory(list)
    violations: list[DiskSample] = attrs.Factory(list)
    extra_objects: list[str] = attrs.Factory(list)
    mismatched: list[str] = attrs.Factory(list)

    @property
    def ingest_mb_s(self) -> float:
        return self.nbytes / 1e6 / self.ingest_seconds

    @property
    def upload_mb_s(self) -> float:
        return self.uploaded_bytes / 1e6 / self.upload_seconds if self.upload_seconds else 0.0

    @property
    def upload_ratio(self) -> float:
        """Upload throughput ÷ ingest throughput of the same run (B5)."""
        return self.upload_mb_s / self.ingest_mb_s

    @property
    def removal_segments_per_second(self) -> float:
        return (self.removed_segments / self.removal_seconds
                if self.removal_seconds else float("nan"))

    def peak_disk(self, node: int) -> int:
        return max((s.disk_bytes for s in self.samples if s.node == node), default=0)

    @property
    def peak_over_unarchived(self) -> int:
        """The most any sample held beyond what was not archived yet (bytes)."""
        return max((s.disk_bytes - s.unarchived for s in self.samples), default=0)

    @property
    def peak_over_held(self) -> int:
        """The most any sample held beyond what rule L3 keeps (bytes, whole segments; 0
        when some sample held exactly that, negative when every one held less)."""
        return max((s.disk_bytes - s.held for s in self.samples), default=0)

    @property
    def ok(self) -> bool:
        return (not self.violations and not self.extra_objects and not self.mismatched
                and self.verified_segments == self.archived_segments > 0)

    def summary(self) -> str:
        nodes = sorted({s.node for s in self.samples})
        peaks = ", ".join(f"node {n} {self.peak_disk(n) / 2**20:.0f} MiB" for n in nodes)
        return (
            f"{self.nbytes / 2**30:.2f} GiB on {self.seg_size >> 20} MiB segments: ingest "
            f"{self.ingest_mb_s:.1f} MB/s, upload {self.upload_mb_s:.1f} MB/s (ratio "
            f"{self.upload_ratio:.2f}), archive caught up {self.catch_up_seconds:.1f} s after "
            f"ingest; removal {self.removed_segments} segments in {self.removal_seconds:.2f} s; "
            f"{len(self.samples)} disk samples, peak WAL on disk {peaks}, at most "
            f"{self.peak_over_unarchived / 2**20:.1f} MiB beyond the unarchived WAL and "
            f"{self.peak_over_held // self.seg_size:+d} segments beyond the whole segments "
            f"not archived or not on every peer {self.removal_grace:g} s earlier through "
            f"the one being written (bound: that + {self.bound_segments}), "
            f"{len(self.violations)} over the bound; {self.verified_segments}/"
            f"{self.archived_segments} archived segments byte-identical")


def _new_ttid() -> TenantTimelineId:
    return TenantTimelineId(TenantId(os.urandom(16)), TimelineId(os.urandom(16)))


def _wal_on_disk(directory: Path) -> int:
    """Bytes of the segment files in a timeline directory: complete, ``.partial`` and the
    ``waltmp`` a new segment is made in (full-size before it is renamed into place)."""
    total = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            if entry.name[:1] == "0" or entry.name == "waltmp":
                with contextlib.suppress(FileNotFoundError):  # removed while we looked
                    total += entry.stat().st_size
    return total


def kept_bytes(hold: Lsn, written_end: Lsn, seg_size: int) -> int:
    """B2's ``held``: the bytes of the whole segments from the one ``hold`` is in through
    ``written_end`` (a segment end, :func:`_written_end`). The segment with the hold is
    kept whole (removal goes by segments: rule L3 rounds its horizon down), and so is the
    one being written (created full-size), however few of their bytes are WAL."""
    return max(0, int(written_end) - (int(hold) - int(hold) % seg_size))


def _written_end(lifecycle: object, seg_size: int) -> Lsn:
    """The end of the last segment a node holds WAL in (B2), from its status: every segment
    from its ``removal_horizon`` (its store's start) through its write position counts in
    ``wal_disk_bytes``. The write position includes WAL accepted but not yet flushed (and
    the write batch): a segment file exists, full-size, as soon as its first byte is
    written."""
    assert isinstance(lifecycle, dict)
    start = int(_lsn(lifecycle["removal_horizon"]))
    return Lsn(start - start % seg_size + int(str(lifecycle["wal_disk_bytes"])))


async def _propose(cluster: Cluster, ttid: TenantTimelineId, nbytes: int) -> float:
    from ..proposer import ProposerConfig, propose, websocket_connector, websocket_fetcher

    urls = tuple(node.wal_url for node in cluster.nodes.values())
    t0 = time.perf_counter()
    with quieted("safekeeper_recovery.proposer"):
        await propose(
            ProposerConfig(urls, ttid.tenant_id, ttid.timeline_id, nbytes, seed=SEED,
                           window_bytes=PROPOSER_WINDOW),
            websocket_connector(ttid.tenant_id, ttid.timeline_id),
            fetch_wal=websocket_fetcher(ttid.tenant_id, ttid.timeline_id),
        )
    return time.perf_counter() - t0


async def _create(cluster: Cluster, ttid: TenantTimelineId, seg_size: int) -> None:
    for node in cluster.nodes.values():
        async with SafekeeperClient(node.http_url) as client:
            await client.create_timeline(ttid, start_lsn=START_LSN, wal_seg_size=seg_size)


def _lsn(value: object) -> Lsn:
    return Lsn.parse(str(value))


async def run_plain_ingest(root: Path, nbytes: int, *, seg_size: int = ARCHIVE_SEG_SIZE,
                           extra_args: Sequence[str] = ()) -> float:
    """The ingest of :func:`run_archive` without ``--archive`` (no upload, no removal):
    the proposer's wall time for ``nbytes`` through three fresh nodes."""
    cluster = Cluster(root, 3, extra_args=extra_args, peer_timing=(), ready_timeout=30.0)
    try:
        await cluster.start()
        ttid = _new_ttid()
        await _create(cluster, ttid, seg_size)
        return await _propose(cluster, ttid, nbytes)
    finally:
        with trio.CancelScope(shield=True):
            await cluster.aclose()


async def run_archive(
    root: Path,
    nbytes: int,
    *,
    seg_size: int = ARCHIVE_SEG_SIZE,
    archive_url: str | None = None,
    archive_endpoint: str | None = None,
    extra_args: Sequence[str] = (),
    sample_interval: float = 0.25,
    bound_segments: int = BOUND_SEGMENTS,
    removal_grace: float = REMOVAL_GRACE,
    catch_up_timeout: float = 300.0,
    console: Console | None = None,
) -> ArchiveRun:
    """Rules B1-B5 under ``root`` (three nodes and, without ``archive_url``, a ``file://``
    archive there). Never raises for a broken bound or a mismatched object: they are in
    the result (``ok``, ``violations``, ``mismatched``); raises if the nodes or the
    proposer fail, or the archive does not catch up within ``catch_up_timeout``."""
    if archive_url is None:
        (root / "archive").mkdir(parents=True, exist_ok=True)
        archive_url = f"file://{root / 'archive'}"
    args = ["--archive", archive_url, *extra_args]
    if archive_endpoint is not None:
        args += ["--archive-endpoint", archive_endpoint]
    cluster = Cluster(root / "nodes", 3, extra_args=args, peer_timing=(), ready_timeout=30.0)
    run = ArchiveRun(nbytes, seg_size, bound_segments, removal_grace)
    ttid = _new_ttid()
    archived_end = START_LSN
    try:
        await cluster.start()
        await _create(cluster, ttid, seg_size)
        clients = {i: SafekeeperClient(node.http_url) for i, node in cluster.nodes.items()}
        dirs = {i: node.data_dir / str(ttid.tenant_id) / str(ttid.timeline_id)
                for i, node in cluster.nodes.items()}
        started = time.perf_counter()
        holds: dict[int, list[tuple[float, Lsn]]] = {i: [] for i in clients}

        async def sample_once() -> None:
            for i, client in clients.items():
                before = await client.timeline_status(ttid)
                now = time.perf_counter() - started
                disk = await trio.to_thread.run_sync(_wal_on_disk, dirs[i])
                after = await client.timeline_status(ttid)
                lifecycle, peers = before["wal_lifecycle"], before["peers"]
                assert isinstance(lifecycle, dict)
                assert isinstance(peers, list)
                backup = max(_lsn(lifecycle["backup_lsn"]), START_LSN)
                # The hold only rises: the one ``removal_grace`` before the disk read is
                # the newest one read at least that long before (the first one early in
                # the run). Read before ``now``, so never younger than the grace.
                history = holds[i]
                history.append((now, max(min([_lsn(before["commit_lsn"]), backup,
                                              *(_lsn(p["flush_lsn"]) for p in peers)]),
                                         START_LSN)))
                while len(history) > 1 and history[1][0] <= now - removal_grace:
                    del history[0]
                hold = history[0][1]
                flush = int(_lsn(after["flush_lsn"]))
                end = _written_end(after["wal_lifecycle"], seg_size)
                held = kept_bytes(hold, end, seg_size)
                sample = DiskSample(now, i, disk, max(0, flush - int(backup)), held,
                                    held + bound_segments * seg_size, hold, end,
                                    Lsn(flush))
                run.samples.append(sample)
                if sample.disk_bytes > sample.bound:
                    run.violations.append(sample)

        async def sample_forever() -> None:
            while True:
                await sample_once()
                await trio.sleep(sample_interval)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample_forever)
                run.ingest_seconds = await _propose(cluster, ttid, nbytes)
                if console is not None:
                    console.print(f"    archive run: {nbytes / 2**20:.0f} MiB written in "
                                  f"{run.ingest_seconds:.1f} s; waiting for the archive")
                commit = _lsn((await clients[1].timeline_status(ttid))["commit_lsn"])
                archived_end = Lsn(int(commit) - int(commit) % seg_size)
                await _wait_caught_up(clients, ttid, archived_end, catch_up_timeout)
                run.catch_up_seconds = time.perf_counter() - started - run.ingest_seconds
                nursery.cancel_scope.cancel()
            await sample_once()  # the settled state, checked like every other sample
            for client in clients.values():
                lifecycle = (await client.timeline_status(ttid))["wal_lifecycle"]
                assert isinstance(lifecycle, dict)
                run.uploaded_bytes += int(str(lifecycle["uploaded_bytes"]))
                run.upload_seconds += float(str(lifecycle["upload_seconds"]))
                run.removed_segments += int(str(lifecycle["removed_segments"]))
                run.removal_seconds += float(str(lifecycle["removal_seconds"]))
        finally:
            for client in clients.values():
                await client.aclose()
    finally:
        with trio.CancelScope(shield=True):
            await cluster.aclose()
    await _verify_archive(run, archive_url, archive_endpoint, ttid, archived_end)
    return run


async def _wait_caught_up(clients: dict[int, SafekeeperClient], ttid: TenantTimelineId,
                          end: Lsn, timeout: float) -> None:
    """B3: until every node's backup_lsn and removal horizon are ``end``."""
    with trio.fail_after(timeout):
        while True:
            done = True
            for client in clients.values():
                lifecycle = (await client.timeline_status(ttid))["wal_lifecycle"]
                assert isinstance(lifecycle, dict)
                if (_lsn(lifecycle["backup_lsn"]) < end
                        or _lsn(lifecycle["removal_horizon"]) < end):
                    done = False
                    break
            if done:
                return
            await trio.sleep(0.1)


async def _verify_archive(run: ArchiveRun, url: str, endpoint: str | None,
                          ttid: TenantTimelineId, end: Lsn) -> None:
    """B4: every complete segment archived, byte-identical to the regenerated WAL."""
    from ..proposer import WalGenerator

    archive = open_archive(url, endpoint=endpoint)
    seg = run.seg_size
    first, last = START_LSN // seg, end // seg
    expected = {segment_key(ttid, n, seg) for n in range(first, last)}
    listed = await archive.list(segment_key(ttid, first, seg).rsplit("/", 1)[0] + "/")
    run.extra_objects = sorted(set(listed) - expected)
    run.archived_segments = last - first
    wal = WalGenerator(SEED, int(end) - int(START_LSN))
    for n in range(first, last):
        key = segment_key(ttid, n, seg)
        try:
            data = await archive.get(key)
        except Exception as e:  # a missing or corrupt object is a finding, not a crash
            run.mismatched.append(f"{key}: {e}")
            continue
        want = await trio.to_thread.run_sync(wal.read, n * seg - int(START_LSN), seg)
        if hashlib.sha256(data).digest() != hashlib.sha256(want).digest():
            run.mismatched.append(f"{key}: differs from the WAL the proposer wrote")
        else:
            run.verified_segments += 1


@attrs.define
class ArchiveFigures:
    """The benchmark's lifecycle figures over its rounds (B5), one sample per round."""

    ingest_on: Samples = attrs.Factory(
        lambda: Samples("ingest, archive + removal on (3 nodes, 16 MiB segments)", "MB/s"))
    ingest_off: Samples = attrs.Factory(
        lambda: Samples("ingest, no archive (same setup)", "MB/s"))
    upload: Samples = attrs.Factory(lambda: Samples("archive upload (busy time)", "MB/s"))
    upload_ratio: Samples = attrs.Factory(
        lambda: Samples("archive upload ÷ ingest (same run)", "x"))
    removal: Samples = attrs.Factory(lambda: Samples("removal rate", "segments/s"))
    catch_up: Samples = attrs.Factory(
        lambda: Samples("archive caught up after ingest ends", "s"))
    over_unarchived: Samples = attrs.Factory(
        lambda: Samples("WAL on disk beyond the unarchived (max of samples)", "MiB"))
    runs: list[ArchiveRun] = attrs.Factory(list)

    def add(self, run: ArchiveRun, plain_seconds: float) -> None:
        self.runs.append(run)
        self.ingest_on.add(run.ingest_mb_s)
        self.ingest_off.add(run.nbytes / 1e6 / plain_seconds)
        self.upload.add(run.upload_mb_s)
        self.upload_ratio.add(run.upload_ratio)
        self.removal.add(run.removal_segments_per_second)
        self.catch_up.add(run.catch_up_seconds)
        self.over_unarchived.add(run.peak_over_unarchived / 2**20)

    def rows(self) -> list[tuple[str, str, str]]:
        """(figure, median (min-max), unit) rows of the report; none if not run."""
        if not self.runs:
            return []
        cost = ratio(self.ingest_on, self.ingest_off)
        out = [(s.name, s.describe(), s.unit)
               for s in (self.ingest_on, self.ingest_off, self.upload)]
        out.append((self.upload_ratio.name, self.upload_ratio.describe(".2f"), "x"))
        out.append(("ingest with ÷ without archive + removal", cost.describe(".2f"), "x"))
        out += [(s.name, s.describe(), s.unit)
                for s in (self.removal, self.catch_up, self.over_unarchived)]
        return out

    def targets(self) -> list[tuple[str, str, bool | None]]:
        """(target, measured, met) rows: uploads keep up, the disk bound, the archive."""
        if not self.runs:
            return []
        worst = min(self.upload_ratio.values)
        samples = sum(len(r.samples) for r in self.runs)
        violations = sum(len(r.violations) for r in self.runs)
        verified = sum(r.verified_segments for r in self.runs)
        archived = sum(r.archived_segments for r in self.runs)
        return [
            ("archive upload ÷ ingest ≥ 1.0 (every round)", f"{worst:.2f}", worst >= 1.0),
            (f"WAL on disk ≤ its whole segments not archived or not on every peer "
             f"{REMOVAL_GRACE:g} s earlier, through the one being written"
             + (f" + {BOUND_SEGMENTS}" if BOUND_SEGMENTS else "") + " (every sample)",
             f"{violations} of {samples} over", violations == 0),
            ("archived segments byte-identical to the WAL written",
             f"{verified} of {archived}", verified == archived and all(
                 not r.extra_objects for r in self.runs)),
        ]


async def archive_round(root: Path, nbytes: int, figures: ArchiveFigures, index: int) -> None:
    """One benchmark round: :func:`run_archive` and :func:`run_plain_ingest` of ``nbytes``,
    their order alternating by round; their directories are removed afterwards."""
    async def plain() -> float:
        return await run_plain_ingest(root / f"plain-{index}", nbytes)

    async def archived() -> ArchiveRun:
        return await run_archive(root / f"archive-{index}", nbytes)

    try:
        if index % 2:
            plain_seconds = await plain()
            run = await archived()
        else:
            run = await archived()
            plain_seconds = await plain()
    finally:
        for name in (f"plain-{index}", f"archive-{index}"):
            await trio.to_thread.run_sync(partial(shutil.rmtree, root / name,
                                                  ignore_errors=True))
    figures.add(run, plain_seconds)
