"""Auth on (keys and tokens made with the CLI): 401 without a token, 403 for another
tenant's token, success with a valid one — on the HTTP port and on the WAL port."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from safekeeper_recovery.core import (
    AcceptorGreeting,
    Greeting,
    TenantId,
    TenantTimelineId,
    TimelineId,
)
from safekeeper_recovery.testing import DEFAULT_START_LSN as START
from safekeeper_recovery.testing import run_cli, wait_until
from safekeeper_recovery.transport._http_client import HttpError, SafekeeperClient
from safekeeper_recovery.transport._wal_client import (
    WalConnectError,
    open_wal_push,
    open_wal_stream,
)

from .conftest import ClusterFactory

TENANT_A = TenantId.parse("a" * 32)
TENANT_B = TenantId.parse("b" * 32)
TTID = TenantTimelineId(TENANT_A, TimelineId.parse("1" * 32))


async def make_token(key: Path, scope: str, tenant: TenantId | None = None) -> str:
    args = ["token", "--private-key", str(key), "--scope", scope]
    if tenant is not None:
        args += ["--tenant-id", str(tenant)]
    result = await run_cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.slow
async def test_auth_on_both_ports(tmp_path: Path, make_cluster: ClusterFactory) -> None:
    keys = tmp_path / "keys"
    assert (await run_cli("keygen", "--out-dir", str(keys))).returncode == 0
    private = keys / "auth_private_key.pem"
    admin = await make_token(private, "safekeeperdata")
    token_a = await make_token(private, "tenant", TENANT_A)
    token_b = await make_token(private, "tenant", TENANT_B)
    (tmp_path / "peer.jwt").write_text(admin + "\n")
    cluster = make_cluster(
        2,
        extra_args=[
            "--auth-public-key", str(keys / "auth_public_key.pem"),
            "--token-file", str(tmp_path / "peer.jwt"),
        ],
        token=admin,
    )
    await cluster.start()
    await cluster.create_timeline(TTID)
    node = cluster[1]

    # HTTP port.
    for token, expected in ((None, 401), ("not-a-jwt", 401), (token_b, 403)):
        async with SafekeeperClient(node.http_url, token=token) as client:
            with pytest.raises(HttpError) as info:
                await client.timeline_status(TTID)
            assert info.value.status == expected, (token, info.value)
    async with SafekeeperClient(node.http_url, token=token_a) as client:
        assert (await client.typed_timeline_status(TTID)).flush_lsn == START
        with pytest.raises(HttpError) as info:
            await client.status()  # node-wide: a tenant token is not enough
        assert info.value.status == 403

    # WAL port.
    for token, expected in ((None, 401), (token_b, 403)):
        with pytest.raises(WalConnectError) as wal_info:
            async with open_wal_push(node.wal_url, TENANT_A, TTID.timeline_id, token=token):
                pass
        assert wal_info.value.status == expected, (token, wal_info.value)
    async with open_wal_push(node.wal_url, TENANT_A, TTID.timeline_id, token=token_a) as conn:
        await conn.send(Greeting(TENANT_A, TTID.timeline_id))
        reply = await conn.receive()
        assert isinstance(reply, AcceptorGreeting)
        assert reply.node_id == 1

    # The nodes authenticate to each other: each one hears from its peer.
    async def peer_seen() -> bool:
        status = await cluster.status(1, TTID)
        peers = status["peers"]
        assert isinstance(peers, list)
        return any(isinstance(p, dict) and p.get("sk_id") == 2 for p in peers)

    await wait_until(peer_seen, 10, message="node 1 to list node 2 as a peer")


@pytest.mark.slow
async def test_recovery_endpoints_need_a_peer_token_and_cli_tokens_expire(
    tmp_path: Path, make_cluster: ClusterFactory
) -> None:
    keys = tmp_path / "keys"
    assert (await run_cli("keygen", "--out-dir", str(keys))).returncode == 0
    private = keys / "auth_private_key.pem"
    admin = await make_token(private, "safekeeperdata")
    tenant = await make_token(private, "tenant", TENANT_A)
    cluster = make_cluster(1, extra_args=["--auth-public-key", str(keys / "auth_public_key.pem")],
                           token=admin)
    await cluster.start()
    await cluster.create_timeline(TTID)
    node = cluster[1]
    tl = TTID.timeline_id

    # A tenant (proposer) token: its own pushes and committed WAL, not the recovery stream
    # (uncommitted WAL) nor a recovery push.
    for opener in (
        lambda token: open_wal_stream(node.wal_url, TENANT_A, tl, START, term=0, token=token),
        lambda token: open_wal_push(node.wal_url, TENANT_A, tl, recovery=True, token=token),
    ):
        with pytest.raises(WalConnectError) as refused:
            async with opener(tenant):
                pass
        assert refused.value.status == 403, refused.value
        assert "safekeeperdata" in (refused.value.body or ""), refused.value
        async with opener(admin):
            pass
    async with open_wal_stream(node.wal_url, TENANT_A, tl, START, token=tenant):
        pass

    claims = jwt.decode(tenant, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 90 * 24 * 3600  # the default lifetime
    # `token --expires-in`: refused once it has expired.
    short = await run_cli("token", "--private-key", str(private), "--scope", "tenant",
                          "--tenant-id", str(TENANT_A), "--expires-in", "1s")
    assert short.returncode == 0, short.stderr
    short_token = short.stdout.strip()

    async def expired() -> bool:
        async with SafekeeperClient(node.http_url, token=short_token) as client:
            try:
                await client.timeline_status(TTID)
            except HttpError as e:
                return e.status == 401 and "expired" in str(e).lower()
            return False

    await wait_until(expired, 10, message="the 1 s token to be refused as expired")
