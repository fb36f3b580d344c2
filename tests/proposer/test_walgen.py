"""The proposer's WAL sources: the pseudo-random generator, append chunking, and the
``wal_source`` seam (``wal_format="pg"`` writes valid, chained PostgreSQL WAL)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from safekeeper_recovery.core import MAX_SEND_SIZE, Lsn
from safekeeper_recovery.pgwal import CLEAN_STEP, SyntheticWal, verify_chunks
from safekeeper_recovery.proposer import (
    BLOCK_SIZE,
    Election,
    LostQuorumError,
    ProposerConfig,
    ProposerError,
    WalGenerator,
    WalSource,
    chunk_end,
    propose,
)
from safekeeper_recovery.proposer._results import PG_VERSION
from safekeeper_recovery.testing import MiB

from ._fakes import START, TENANT, TIMELINE, FakeCluster

SIZE = 3 * BLOCK_SIZE + 12345
WHOLE = WalGenerator(3, SIZE).read(0, SIZE)


def test_same_seed_same_bytes() -> None:
    assert WalGenerator(7, SIZE).read(0, SIZE) == WalGenerator(7, SIZE).read(0, SIZE)


def test_different_seeds_differ() -> None:
    assert WalGenerator(1, 4096).read(0, 4096) != WalGenerator(2, 4096).read(0, 4096)


@given(st.integers(0, SIZE), st.integers(0, SIZE))
def test_any_slice_matches_the_whole_stream(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    gen = WalGenerator(3, SIZE)
    assert gen.read(lo, hi - lo) == WHOLE[lo:hi]


def test_reading_past_the_end_is_an_error() -> None:
    with pytest.raises(ValueError, match="outside the stream"):
        WalGenerator(3, 10).read(5, 6)


@given(st.integers(0, 2**40), st.integers(0, 2**20))
def test_chunks_are_bounded_and_never_cross_an_aligned_boundary(lsn: int, length: int) -> None:
    end = int(chunk_end(Lsn(lsn), Lsn(lsn + length)))
    assert lsn <= end <= lsn + length
    assert end - lsn <= MAX_SEND_SIZE
    assert (end - 1) // MAX_SEND_SIZE == lsn // MAX_SEND_SIZE or end == lsn
    if length:
        assert end > lsn


# ---- the WalSource seam -----------------------------------------------------------------

SEG = 16 * MiB  # what the fakes' timelines are created with (ServerInfo's default)


def pg_config(cluster: FakeCluster, nbytes: int, seed: int, **kw: Any) -> ProposerConfig:
    fast: dict[str, Any] = {
        "reconnect_min": 0.01, "reconnect_max": 0.05, "keepalive_interval": 0.05,
        "lost_quorum_timeout": 0.3, "drain_timeout": 2.0, "close_timeout": 0.5,
        "wal_format": "pg",
    }
    fast.update(kw)
    return ProposerConfig(cluster.urls, TENANT, TIMELINE, nbytes, seed=seed, **fast)


async def test_pg_format_writes_the_synthetic_wal_and_greets_with_its_identity() -> None:
    cluster = FakeCluster(3)
    cfg = pg_config(cluster, 3 * MiB + 1001, seed=4)
    with trio.fail_after(20):
        result = await propose(cfg, cluster.connector("A"))
    expected = SyntheticWal(4, START, 3 * MiB + 64 * 1024, seg_size=SEG,
                            system_id=cfg.pg_system_id(), clean_step=CLEAN_STEP)
    # pgwal's rule C1: rounded up to the next multiple of 64 KiB.
    assert result.bytes == expected.size == 3 * MiB + 64 * 1024
    assert result.end_lsn == result.commit_lsn == expected.end_lsn
    for node in cluster.nodes.values():
        assert node.durable_wal() == expected.read(0, expected.size)
        assert node.persisted.server.system_id == cfg.pg_system_id() != 0
        assert node.persisted.server.pg_version == PG_VERSION
    report = verify_chunks([cluster[0].durable_wal()], START, result.end_lsn, SEG,
                           system_id=cfg.pg_system_id())
    assert report.ok, report.summary()


async def test_a_second_run_continues_the_xl_prev_chain() -> None:
    cluster = FakeCluster(3)
    with trio.fail_after(30):
        first = await propose(pg_config(cluster, MiB, seed=1), cluster.connector("A"))
        second = await propose(pg_config(cluster, 2 * MiB, seed=2), cluster.connector("B"))
    assert second.start_lsn == first.end_lsn
    wal = cluster[0].durable_wal()
    report = verify_chunks([wal], START, second.end_lsn, SEG, prev_lsn=Lsn(0))
    assert report.ok, report.summary()
    assert report.last_record_lsn == second.end_lsn - 24


async def test_a_segment_size_the_timeline_does_not_have_is_refused() -> None:
    cluster = FakeCluster(3)
    with trio.fail_after(10), pytest.raises(LostQuorumError, match="R1: greeting wal_seg_size"):
        await propose(pg_config(cluster, MiB, seed=1, wal_seg_size=MiB), cluster.connector("A"))
    assert all(node.durable_wal() == b"" for node in cluster.nodes.values())


class Counting:
    """A custom WalSource: byte i is i % 251."""

    def __init__(self, size: int) -> None:
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        return bytes((offset + i) % 251 for i in range(length))


async def test_a_custom_source_is_built_once_elected_and_written() -> None:
    cluster = FakeCluster(3)
    seen: list[Election] = []

    def factory(election: Election) -> WalSource:
        seen.append(election)
        return Counting(70_000)

    cfg = pg_config(cluster, 5, seed=0, wal_format="random")
    with trio.fail_after(20):
        result = await propose(cfg, cluster.connector("A"), wal_source=factory)
    assert [e.term_start_lsn for e in seen] == [START]
    assert result.end_lsn == START + 70_000  # the source's size, not total_bytes
    assert cluster[0].durable_wal() == Counting(70_000).read(0, 70_000)


async def test_a_source_that_cannot_start_there_stops_the_run_with_the_reason() -> None:
    cluster = FakeCluster(3)

    def factory(election: Election) -> WalSource:
        raise ValueError(f"{election.term_start_lsn} is not a record boundary")

    with trio.fail_after(10), pytest.raises(ProposerError, match="is not a record boundary"):
        await propose(pg_config(cluster, MiB, seed=0), cluster.connector("A"), wal_source=factory)


def test_byte_i_depends_only_on_the_seed_and_i_not_on_the_stream_size() -> None:
    # A short stream draws only its own bytes, yet must be a prefix of a longer one.
    for size in (1, 3, 4, 4097, BLOCK_SIZE - 1, BLOCK_SIZE + 5):
        assert WalGenerator(3, size).read(0, size) == WHOLE[:size]
