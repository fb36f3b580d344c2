"""Fixtures for the real-process tests: a cluster factory that always kills its children."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from safekeeper_recovery.testing import Cluster

from .seaweedfs import S3Server, run_seaweedfs

ClusterFactory = Callable[..., Cluster]


@pytest.fixture
async def make_cluster(tmp_path: Path) -> AsyncIterator[ClusterFactory]:
    """``make_cluster(n, extra_args=(), token=None)``; every child is SIGKILLed at teardown."""
    clusters: list[Cluster] = []

    def make(n: int = 3, *, extra_args: Sequence[str] = (), token: str | None = None) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster{len(clusters)}", n, extra_args=extra_args,
                          token=token)
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            await cluster.aclose()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server on loopback for the whole session (started on first use,
    stopped by its pid at the end), with bucket ``S3Server.bucket``."""
    with run_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
