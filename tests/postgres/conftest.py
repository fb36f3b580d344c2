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
