"""Bad input on the pg port from a real client (psql, libpq): each gets a clear error with
its SQLSTATE, and the node goes on serving the others."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from safekeeper_recovery.testing import (
    DEFAULT_START_LSN,
    NodeProcess,
    allocate_ports,
    make_ttid,
    run_cli,
)

TTID = make_ttid(5, tenant=3)


async def psql(pg_bindir: Path, conninfo: str, command: str) -> tuple[int, str]:
    done = await trio.run_process(
        [str(pg_bindir / "psql"), "-X", "-A", "-t", "-v", "VERBOSITY=verbose",
         "-d", conninfo, "-c", command],
        capture_stdout=True, capture_stderr=True, check=False,
    )
    return done.returncode, (done.stdout + done.stderr).decode()


@pytest.mark.slow
async def test_bad_input_gets_a_clear_error_and_the_node_goes_on(
    tmp_path: Path, pg_bindir: Path,
) -> None:
    keys = tmp_path / "keys"
    assert (await run_cli("keygen", "--out-dir", str(keys))).returncode == 0
    private = str(keys / "auth_private_key.pem")
    admin = (await run_cli("token", "--private-key", private, "--scope",
                           "safekeeperdata")).stdout.strip()
    tenant = (await run_cli("token", "--private-key", private, "--scope", "tenant",
                            "--tenant-id", str(TTID.tenant_id))).stdout.strip()
    other = (await run_cli("token", "--private-key", private, "--scope", "tenant",
                           "--tenant-id", "ab" * 16)).stdout.strip()
    http, wal, pg = allocate_ports(3)
    node = NodeProcess(1, tmp_path / "sk1", http, wal, pg_port=pg,
                       extra_args=["--auth-public-key", str(keys / "auth_public_key.pem")])
    await node.start()
    try:
        async with node.client(admin) as client:
            await client.create_timeline(TTID, DEFAULT_START_LSN)

        def conninfo(password: str = tenant, timeline: object = TTID.timeline_id,
                     replication: bool = True) -> str:
            return node.pg_conninfo(TTID.tenant_id, timeline, password=password,
                                    **({"replication": "true"} if replication else {}))

        async def still_serving() -> None:
            code, out = await psql(pg_bindir, conninfo(), "IDENTIFY_SYSTEM")
            assert code == 0, out
            assert f"|1|{DEFAULT_START_LSN}|" in out

        await still_serving()
        cases = [
            (conninfo(replication=False), "IDENTIFY_SYSTEM", "replication=true"),
            (conninfo(timeline="f" * 32), "IDENTIFY_SYSTEM", "does not exist"),
            (conninfo(password="not-a-token"), "IDENTIFY_SYSTEM", "authentication failed"),
            (conninfo(password=other), "IDENTIFY_SYSTEM", "not valid for tenant"),
            (conninfo(), "SELECT 1", "0A000: cannot execute SQL commands"),
            (conninfo(), "START_REPLICATION PHYSICAL 0/0", "58P01: requested WAL segment"),
            (conninfo(), "START_REPLICATION PHYSICAL 0/FF000000",
             "55000: requested starting point 0/FF000000 is ahead"),
            (conninfo(), "SHOW shared_buffers", "42704: unrecognized configuration parameter"),
        ]
        for info, command, expected in cases:
            code, out = await psql(pg_bindir, info, command)
            assert code != 0
            assert expected in out, out
            await still_serving()
        assert node.running
    finally:
        await node.stop()
