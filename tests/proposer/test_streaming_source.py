"""The proposer with a WAL source that grows while it runs (the shape of ingest from a live
PostgreSQL), against the in-process fake safekeepers."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import trio

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.proposer import (
    Election,
    Proposer,
    ProposerError,
    StreamingWalSource,
    WalGenerator,
    propose,
)
from safekeeper_recovery.testing import MiB

from ._fakes import START, FakeCluster
from .test_proposer import config


class GrowingWal:
    """WAL that the test appends to; ``drop_below`` releases what the commit passed."""

    def __init__(self, start: Lsn, *, release: bool = False, fail: Exception | None = None
                 ) -> None:
        self.start = start
        self._first = start
        self._buf = bytearray()
        self._final: Lsn | None = None
        self.commits: list[Lsn] = []
        self._release = release
        self._fail = fail
        self._notify: Callable[[], None] = lambda: None
        self.running = trio.Event()

    @property
    def first(self) -> Lsn:
        return self._first

    @property
    def available(self) -> Lsn:
        return self._first + len(self._buf)

    @property
    def final_end(self) -> Lsn | None:
        return self._final

    def read_wal(self, start: Lsn, end: Lsn) -> bytes:
        assert self._first <= start <= end <= self.available
        return bytes(self._buf[start - self._first : end - self._first])

    def committed(self, commit_lsn: Lsn) -> None:
        self.commits.append(commit_lsn)
        if self._release:
            del self._buf[: commit_lsn - self._first]
            self._first = commit_lsn
            self._notify()

    def append(self, data: bytes) -> None:
        self._buf += data
        self._notify()

    def finish(self) -> None:
        self._final = self.available
        self._notify()

    async def run(self, notify: Callable[[], None]) -> None:
        self._notify = notify
        self.running.set()
        if self._fail is not None:
            raise self._fail
        await trio.sleep_forever()


def committed_to(source: GrowingWal, end: Lsn) -> bool:
    return bool(source.commits) and source.commits[-1] >= end


def wal(nbytes: int) -> bytes:
    return WalGenerator(7, nbytes).read(0, nbytes)


async def test_growing_wal_is_written_as_it_arrives_and_ends_when_finished() -> None:
    cluster = FakeCluster(3)
    sources: list[GrowingWal] = []

    def make(election: Election) -> GrowingWal:
        sources.append(GrowingWal(election.term_start_lsn))
        return sources[0]

    data = wal(3 * MiB)
    proposer = Proposer(config(cluster, 0), cluster.connector("A"), wal_source=make)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            results = []

            async def run() -> None:
                results.append(await proposer.run())

            nursery.start_soon(run)
            await cluster.wait_until(lambda: bool(sources))
            source = sources[0]
            for i in range(3):
                source.append(data[i * MiB : (i + 1) * MiB])
                end = START + (i + 1) * MiB
                # Each piece is committed before the next exists: the stream follows the
                # source, it does not wait for its end.
                await cluster.wait_until(functools.partial(committed_to, source, end))
            assert proposer.statistics().end_lsn is None
            source.finish()  # the end becomes known after the commit already reached it
    result = results[0]
    assert result.end_lsn == result.commit_lsn == START + 3 * MiB
    assert result.bytes == 3 * MiB
    assert source.commits == sorted(source.commits)
    for node in cluster.nodes.values():
        assert node.durable_wal() == data


async def test_released_wal_reaches_a_late_node_from_its_peers() -> None:
    cluster = FakeCluster(3)
    cluster[2].kill()
    sources: list[GrowingWal] = []

    def make(election: Election) -> GrowingWal:
        sources.append(GrowingWal(election.term_start_lsn, release=True))
        return sources[0]

    data = wal(2 * MiB)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                await propose(config(cluster, 0), cluster.connector("A"),
                              fetch_wal=cluster.fetcher(), wal_source=make)

            nursery.start_soon(run)
            await cluster.wait_until(lambda: bool(sources))
            source = sources[0]
            source.append(data)
            await cluster.wait_until(lambda: source.first == START + 2 * MiB)
            cluster[2].restart()  # needs WAL from START, which the source no longer holds
            await cluster.wait_until(lambda: cluster[2].flush_lsn == START + 2 * MiB)
            source.finish()
    for node in cluster.nodes.values():
        assert node.durable_wal() == data


async def test_a_failing_source_stops_the_run_with_a_clear_error() -> None:
    cluster = FakeCluster(3)

    def make(election: Election) -> StreamingWalSource:
        return GrowingWal(election.term_start_lsn, fail=OSError("server went away"))

    with trio.fail_after(20), pytest.raises(ProposerError, match="server went away"):
        await propose(config(cluster, 0), cluster.connector("A"), wal_source=make)
