"""``propose --from-postgres`` refuses bad input with a clear message."""

from __future__ import annotations

from safekeeper_recovery.testing import allocate_ports, run_cli

from .ingest_support import TTID

IDS = ("--tenant-id", str(TTID.tenant_id), "--timeline-id", str(TTID.timeline_id))


async def test_ingest_options_need_from_postgres() -> None:
    result = await run_cli("propose", "--safekeepers", "ws://127.0.0.1:1", *IDS,
                           "--stop-at-lsn", "0/2000000")
    assert result.returncode == 2
    assert "need --from-postgres" in result.stderr


async def test_generator_options_are_refused_with_from_postgres() -> None:
    # Otherwise they would be silently ignored: the WAL comes from the server.
    result = await run_cli("propose", "--safekeepers", "ws://127.0.0.1:1", *IDS,
                           "--from-postgres", "host=127.0.0.1", "--bytes", "1MiB",
                           "--wal-format", "random")
    assert result.returncode == 2
    assert "--bytes, --wal-format shape generated WAL" in result.stderr
    assert "--from-postgres" in result.stderr


async def test_an_unreachable_server_is_a_clear_error() -> None:
    (port,) = allocate_ports(1)  # nothing listens there
    result = await run_cli("propose", "--safekeepers", "ws://127.0.0.1:1", *IDS,
                           "--from-postgres", f"host=127.0.0.1 port={port} user=postgres")
    assert result.returncode == 1
    assert "cannot connect to PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr
