"""Fixtures for tests that start a real PostgreSQL (skipped where it is not installed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from safekeeper_recovery.postgres import (
    PostgresError,
    PostgresServer,
    find_bindir,
    running_postgres,
    shared_tempdir,
)
from safekeeper_recovery.testing import Cluster


@pytest.fixture
def pg_bindir() -> Path:
    try:
        return find_bindir()
    except PostgresError as e:
        pytest.skip(str(e))


@pytest.fixture
async def shared_dir() -> AsyncIterator[Path]:
    """A temporary directory the ``postgres`` user can reach (removed afterwards)."""
    async with shared_tempdir() as path:
        yield path


@pytest.fixture
async def postgres(pg_bindir: Path, shared_dir: Path) -> AsyncIterator[PostgresServer]:
    """A throw-away PostgreSQL on loopback, always stopped by its pid at teardown."""
    async with running_postgres(shared_dir / "primary", bindir=pg_bindir) as server:
        yield server


@pytest.fixture
async def primary(pg_bindir: Path, shared_dir: Path) -> AsyncIterator[PostgresServer]:
    """A server for ingest tests: its ``pg_wal`` is kept (``wal_keep_size``) so the
    safekeepers' segments can be compared with it byte for byte."""
    async with running_postgres(shared_dir / "primary", bindir=pg_bindir,
                                settings={"wal_keep_size": "'4GB'"}) as server:
        yield server


@pytest.fixture
async def cluster(shared_dir: Path) -> AsyncIterator[Cluster]:
    """Three safekeeper processes whose data the server user can read (restore_command);
    every one still running is killed at teardown."""
    c = Cluster(shared_dir / "cluster", 3)
    try:
        yield c
    finally:
        await c.aclose()
