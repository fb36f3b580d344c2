"""Auth on the HTTP API and the recovery admin hooks."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio

from safekeeper_recovery.core import AuthError, TenantId, TenantTimelineId
from safekeeper_recovery.transport._auth import Authenticator, generate_keypair, issue_token

from ._http_support import (
    CREATE_BODY,
    TENANT,
    TL_PATH,
    TTID,
    HttpNode,
    asgi_client,
    start_http_node,
)

OTHER_TENANT = TenantId(b"\xee" * 16)


@attrs.define
class Keys:
    private: bytes
    public: bytes

    def token(self, tenant: TenantId | None = None) -> str:
        if tenant is None:
            return issue_token(self.private, "safekeeperdata")
        return issue_token(self.private, "tenant", tenant)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(*generate_keypair())


@pytest.fixture
async def secured(nursery: trio.Nursery, tmp_path: Path, keys: Keys) -> AsyncIterator[HttpNode]:
    node = await start_http_node(nursery, tmp_path, authenticator=Authenticator(keys.public))
    node.client.headers["Authorization"] = f"Bearer {keys.token()}"
    async with node.client:
        r = await node.client.post(f"/v1/tenant/{TENANT}/timeline", json=CREATE_BODY)
        assert r.status_code == 201
        del node.client.headers["Authorization"]
        yield node


ENDPOINTS = [
    ("GET", "/v1/status", None),
    ("GET", "/v1/timelines", None),
    ("GET", "/v1/timelines/changes", None),
    ("POST", "/v1/peer_info", {"node_id": 2, "http_addr": "http://a", "wal_addr": "ws://a",
                               "timelines": []}),
    ("GET", "/v1/recovery", None),
    ("POST", f"/v1/tenant/{TENANT}/timeline", CREATE_BODY),
    ("GET", TL_PATH, None),
    ("GET", f"{TL_PATH}/digest?from_lsn=0/1000000&until_lsn=0/1000000", None),
    ("POST", f"{TL_PATH}/term_bump", {"term": None}),
    ("POST", f"{TL_PATH}/recovery/trigger", None),
    ("POST", f"{TL_PATH}/pull", {"from": ["http://127.0.0.1:1"]}),
    ("GET", f"{TL_PATH}/pull", None),
    ("GET", f"{TL_PATH}/snapshot", None),
    ("DELETE", TL_PATH, None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_every_endpoint_needs_a_token(
    secured: HttpNode, method: str, path: str, body: object
) -> None:
    r = await secured.client.request(method, path, json=body)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert "token" in r.json()["error"]
    r = await secured.client.request(method, path, json=body,
                                     headers={"Authorization": "Bearer not.a.jwt"})
    assert r.status_code == 401
    assert secured.registry.timelines  # nothing was deleted


async def test_token_of_another_key_is_401(secured: HttpNode) -> None:
    stranger = Keys(*generate_keypair())
    r = await secured.client.get(TL_PATH, headers={"Authorization": f"Bearer {stranger.token()}"})
    assert r.status_code == 401


async def test_health_and_metrics_are_open(secured: HttpNode) -> None:
    assert (await secured.client.get("/healthz")).status_code == 200
    assert (await secured.client.get("/metrics")).status_code == 200


async def test_tenant_token_works_for_its_tenant_only(secured: HttpNode, keys: Keys) -> None:
    async with asgi_client(secured.app, keys.token(TENANT)) as mine:
        assert (await mine.get(TL_PATH)).status_code == 200
        r = await mine.post(f"{TL_PATH}/term_bump", json={"term": 3})
        assert r.json()["current_term"] == 3
        # Node-wide endpoints need safekeeperdata.
        for path in ("/v1/status", "/v1/timelines", "/v1/timelines/changes", "/v1/recovery"):
            assert (await mine.get(path)).status_code == 403
        assert (await mine.post("/v1/peer_info", json={})).status_code == 403
        # Pulls and snapshots are peer or operator business (a snapshot is all the WAL).
        for path in (f"{TL_PATH}/pull", f"{TL_PATH}/snapshot"):
            assert (await mine.get(path)).status_code == 403, path
        r = await mine.post(f"{TL_PATH}/pull", json={"from": ["http://127.0.0.1:1"]})
        assert r.status_code == 403
    async with asgi_client(secured.app, keys.token(OTHER_TENANT)) as other:
        r = await other.get(TL_PATH)
        assert r.status_code == 403
        assert "not valid for tenant" in r.json()["error"]
        assert (await other.delete(TL_PATH)).status_code == 403
        assert (await other.post(f"/v1/tenant/{TENANT}/timeline", json=CREATE_BODY)
                ).status_code == 403
    assert TTID in secured.registry.timelines


async def test_safekeeperdata_token_works_everywhere(secured: HttpNode, keys: Keys) -> None:
    async with asgi_client(secured.app, keys.token()) as admin:
        assert (await admin.get("/v1/status")).json()["timeline_count"] == 1
        assert (await admin.get(TL_PATH)).status_code == 200
        assert (await admin.get("/v1/recovery")).status_code == 404  # no engine here


async def test_bad_id_without_token_is_401_not_400(secured: HttpNode, keys: Keys) -> None:
    path = f"/v1/tenant/{'z' * 32}/timeline/{'a' * 32}"
    assert (await secured.client.get(path)).status_code == 401
    async with asgi_client(secured.app, keys.token(TENANT)) as mine:
        assert (await mine.get(path)).status_code == 400


# ---- recovery admin -----------------------------------------------------------------------


@attrs.define
class FakeRecoveryAdmin:
    triggered: list[TenantTimelineId] = attrs.Factory(list)
    cancelled: list[TenantTimelineId] = attrs.Factory(list)

    def snapshot_all(self) -> list[dict[str, object]]:
        return [{"tenant_id": str(TENANT), "state": "idle"}]

    def progress(self) -> dict[str, object]:
        return {"recovering": 0}

    def trigger(self, ttid: TenantTimelineId) -> None:
        self.triggered.append(ttid)

    def cancel(self, ttid: TenantTimelineId) -> None:
        self.cancelled.append(ttid)


async def test_recovery_routes_without_engine_are_404(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    node = await start_http_node(nursery, tmp_path)
    async with node.client as c:
        await c.post(f"/v1/tenant/{TENANT}/timeline", json=CREATE_BODY)
        for method, path in (("GET", "/v1/recovery"), ("POST", f"{TL_PATH}/recovery/trigger"),
                             ("POST", f"{TL_PATH}/recovery/cancel")):
            r = await c.request(method, path)
            assert r.status_code == 404
            assert r.json() == {"error": "recovery is not running on this node"}


async def test_recovery_routes_call_the_admin(nursery: trio.Nursery, tmp_path: Path) -> None:
    admin = FakeRecoveryAdmin()
    node = await start_http_node(nursery, tmp_path, recovery=admin)
    async with node.client as c:
        await c.post(f"/v1/tenant/{TENANT}/timeline", json=CREATE_BODY)
        assert (await c.get("/v1/recovery")).json() == {
            "recoveries": [{"tenant_id": str(TENANT), "state": "idle"}],
            "progress": {"recovering": 0},
        }
        assert (await c.post(f"{TL_PATH}/recovery/trigger")).status_code == 200
        assert (await c.post(f"{TL_PATH}/recovery/cancel")).status_code == 200
        unknown = f"/v1/tenant/{TENANT}/timeline/{'c' * 32}/recovery/trigger"
        assert (await c.post(unknown)).status_code == 404
    assert admin.triggered == [TTID]
    assert admin.cancelled == [TTID]


def test_a_token_past_its_expiry_is_invalid_and_one_within_it_is_not(keys: Keys) -> None:
    auth = Authenticator(keys.public)
    day = 24 * 3600.0
    old = issue_token(keys.private, "tenant", TENANT, expires_in=day, now=time.time() - 2 * day)
    with pytest.raises(AuthError, match="expired") as info:
        auth.check(old, tenant_id=TENANT)
    assert info.value.status == 401
    auth.check(issue_token(keys.private, "tenant", TENANT, expires_in=day), tenant_id=TENANT)


def test_a_tenant_token_is_refused_on_a_peer_only_endpoint_with_403(keys: Keys) -> None:
    auth = Authenticator(keys.public)
    with pytest.raises(AuthError, match="recovery stream is for peers") as info:
        auth.check(keys.token(TENANT), tenant_id=TENANT, peer_only="the recovery stream")
    assert info.value.status == 403
    auth.check(keys.token(), tenant_id=TENANT, peer_only="the recovery stream")
