"""``GET``/``PATCH /v1/recovery/throttles``: read and change the throttles at run time."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from safekeeper_recovery.recovery import RecoveryThrottles

from ._http_support import start_http_node

PATH = "/v1/recovery/throttles"


async def test_patch_changes_what_is_given_and_answers_the_new_settings(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    node = await start_http_node(nursery, tmp_path)
    throttles = RecoveryThrottles(intake_rate=1000.0, serve_rate=None, max_senders=4,
                                  max_concurrent=2)
    node.ctx.throttles = throttles
    async with node.client as c:
        before = (await c.get(PATH)).json()
        assert before["intake"]["max_rate"] == 1000
        assert before["serve"]["max_rate"] is None
        assert (before["max_senders"], before["max_concurrent"]) == (4, 2)
        r = await c.patch(PATH, json={"max_rate": 0, "serve_max_rate": 5 * 2**20,
                                      "max_concurrent": 3})
        assert r.status_code == 200, r.text
        after = r.json()
        assert after["intake"]["max_rate"] is None  # 0: unlimited
        assert after["serve"]["max_rate"] == 5 * 2**20
        assert (after["max_senders"], after["max_concurrent"]) == (4, 3)
    assert throttles.intake.rate is None
    assert throttles.serve.rate == 5 * 2**20
    assert throttles.scheduler.limit == 3


@pytest.mark.parametrize(("body", "says"), [
    ({}, "no setting given"),
    ({"max_rates": 1}, "unknown setting 'max_rates'"),
    ({"max_senders": 0}, "body.max_senders: expected an integer >= 1"),
    ({"max_concurrent": None}, "body.max_concurrent: expected an integer >= 1"),
    ({"max_rate": -1}, "body.max_rate: expected null or an integer >= 0"),
    ({"max_rate": True}, "body.max_rate"),
    ({"max_rate": 1.5}, "body.max_rate"),
    ({"max_rate": 2**64}, "body.max_rate"),
    ([1], "expected a JSON object"),
])
async def test_a_bad_patch_is_refused_and_changes_nothing(
    nursery: trio.Nursery, tmp_path: Path, body: object, says: str
) -> None:
    node = await start_http_node(nursery, tmp_path)
    node.ctx.throttles = RecoveryThrottles(intake_rate=1000.0, max_senders=4)
    async with node.client as c:
        r = await c.patch(PATH, json={"max_senders": 2, **body} if isinstance(body, dict)
                          and body and "max_senders" not in body else body)
        assert r.status_code == 400, r.text
        assert says in r.json()["error"]
    assert node.ctx.throttles.max_senders == 4
    assert node.ctx.throttles.intake.rate == 1000.0


async def test_a_node_without_throttles_answers_404(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    node = await start_http_node(nursery, tmp_path)
    async with node.client as c:
        assert (await c.get(PATH)).status_code == 404
        assert (await c.patch(PATH, json={"max_rate": 1})).status_code == 404
