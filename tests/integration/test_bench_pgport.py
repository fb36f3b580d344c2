"""The benchmark's pg port figure, small: the same WAL streamed by pg_receivewal from
PostgreSQL's walsender and from a safekeeper's pg port, both to the end."""

from __future__ import annotations

import pytest
import trio

from safekeeper_recovery.bench import PostgresServer, find_bindir
from safekeeper_recovery.bench._pgport import TTID, PgPortBench
from safekeeper_recovery.postgres import shared_tempdir
from safekeeper_recovery.testing import MiB


@pytest.mark.slow
async def test_pg_port_streams_the_benchmark_wal_like_the_walsender() -> None:
    try:
        find_bindir()
    except RuntimeError as e:
        pytest.skip(str(e))
    async with shared_tempdir("bench-pgport-") as root:
        pg = PostgresServer(root / "pg", rounds=1)
        pgport = PgPortBench(root, pg)
        try:
            await pg.start()
            await pgport.reserve()
            end = await pg.make_wal(40 * MiB)
            await pgport.load()
            assert pgport.node is not None
            async with pgport.node.client() as client:
                assert (await client.typed_timeline_status(TTID)).commit_lsn > end
            with trio.fail_after(120):  # pg_receivewal waits for WAL past --endpos
                walsender, _cpu = await pg.stream(0, root / "a")
                ours = await pgport.stream(root / "b")
            assert walsender > 0
            assert ours > 0
            assert not await trio.Path(root / "b").exists()  # removed after a good run
        finally:
            await pgport.stop()
            await pg.stop()
