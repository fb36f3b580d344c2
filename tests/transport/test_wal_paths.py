"""Strict request-target parsing, and close reasons that fit a close frame."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.transport import BadRequest, parse_timeline_path
from safekeeper_recovery.transport._paths import parse_lsn, parse_query, parse_term
from safekeeper_recovery.transport._wal_server import (
    WalPushTarget,
    WalStreamTarget,
    parse_wal_target,
    truncate_close_reason,
)

from .conftest import TTID

T = str(TTID.tenant_id)
L = str(TTID.timeline_id)


def test_timeline_path_with_action_and_query() -> None:
    parsed = parse_timeline_path(f"/v1/tenant/{T}/timeline/{L}/wal_stream?start_lsn=0/1")
    assert parsed.ttid == TTID
    assert parsed.action == "wal_stream"
    assert parsed.query == {"start_lsn": "0/1"}
    assert parse_timeline_path(f"/v1/tenant/{T}/timeline/{L}").action == ""


def test_wal_targets() -> None:
    base = f"/v1/tenant/{T}/timeline/{L}"
    assert parse_wal_target(f"{base}/wal_push") == WalPushTarget(TTID, recovery=False)
    assert parse_wal_target(f"{base}/wal_push?recovery=true") == WalPushTarget(TTID, True)
    assert parse_wal_target(f"{base}/wal_stream?start_lsn=1/AB&term=7") == WalStreamTarget(
        TTID, Lsn((1 << 32) | 0xAB), 7
    )
    assert parse_wal_target(f"{base}/wal_stream?start_lsn=0/10") == WalStreamTarget(
        TTID, Lsn(0x10), None
    )


@pytest.mark.parametrize(
    "target",
    [
        "",
        "/",
        f"/v1/tenant/{T}/timeline/{L}/",
        f"/v1/tenant/{T}/timeline/{L}/a/b",
        f"//v1/tenant/{T}/timeline/{L}",
        f"/v2/tenant/{T}/timeline/{L}",
        f"/v1/tenant/{T.upper()}x/timeline/{L}",
        f"/v1/tenant/{T}/timeline/{L}/wal-push",
        f"/v1/tenant/{T}/timeline/{L}?a",
        f"/v1/tenant/{T}/timeline/{L}?a=1&a=2",
        f"/v1/tenant/{T}/timeline/{L}?a=%41",
        f"/v1/tenant/{T}/timeline/{L}?" + "&".join(f"k{i}=1" for i in range(17)),
        "/v1/tenant/" + "0" * 3000,
    ],
)
def test_malformed_paths_are_bad_requests(target: str) -> None:
    with pytest.raises(BadRequest):
        parse_timeline_path(target)


@pytest.mark.parametrize("text", ["", "1", "0/", "/0", " 0/1", "0/1 ", "0/123456789", "g/1"])
def test_bad_lsns(text: str) -> None:
    with pytest.raises(BadRequest, match="invalid start_lsn"):
        parse_lsn(text, name="start_lsn")


@pytest.mark.parametrize("text", ["", "-1", "+1", " 1", "1_0", "18446744073709551616", "\u0661"])
def test_bad_terms(text: str) -> None:
    with pytest.raises(BadRequest, match="invalid term"):
        parse_term(text)


def test_term_range() -> None:
    assert parse_term("18446744073709551615") == 2**64 - 1
    assert parse_term("0") == 0


def test_empty_query() -> None:
    assert parse_query("") == {}


@given(st.text(max_size=400))
def test_close_reasons_fit_in_a_close_frame(reason: str) -> None:
    cut = truncate_close_reason(reason)
    assert len(cut.encode("utf-8")) <= 123
    if len(reason.encode("utf-8")) <= 123:
        assert cut == reason
    else:
        assert cut.endswith("...")
        assert reason.startswith(cut[:-3])
