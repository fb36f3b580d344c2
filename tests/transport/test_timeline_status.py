"""``parse_timeline_status``: the typed status model rejects a malformed document by field."""

from __future__ import annotations

import copy

import pytest

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.testing import make_ttid
from safekeeper_recovery.transport import RecoveryReport, parse_timeline_status

TTID = make_ttid(1)
DOC: dict[str, object] = {
    "tenant_id": str(TTID.tenant_id),
    "timeline_id": str(TTID.timeline_id),
    "acceptor_state": {"term": 2, "epoch": 2,
                       "term_history": [{"term": 0, "lsn": "0/100"}, {"term": 2, "lsn": "0/100"}]},
    "last_log_term": 2,
    "wal_seg_size": 1 << 20,
    "flush_lsn": "0/200",
    "commit_lsn": "0/180",
    "timeline_start_lsn": "0/100",
    "local_start_lsn": "0/100",
    "backup_lsn": "0/0",
    "connected_proposers": 1,
    "broken": None,
    "recovery": {"state": "disabled"},
}


def test_a_disabled_recovery_keeps_its_defaults() -> None:
    status = parse_timeline_status(DOC)
    assert status.recovery == RecoveryReport(state="disabled")
    assert (status.flush_lsn, status.commit_lsn) == (Lsn(0x200), Lsn(0x180))
    assert status.connected_proposers == 1


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("flush_lsn",), 512, r"timeline status\.flush_lsn: expected an LSN string"),
        (("commit_lsn",), None, r"timeline status\.commit_lsn: required"),
        (("connected_proposers",), "1",
         r"timeline status\.connected_proposers: expected an integer"),
        (("broken",), 5, r"timeline status\.broken: expected a string or null"),
        (("tenant_id",), "zz", r"timeline status\.tenant_id"),
        (("acceptor_state", "term"), "2", r"acceptor_state\.term: expected an integer"),
        (("recovery",), None, r"timeline status\.recovery: expected a JSON object"),
        (("recovery", "state"), 1, r"timeline status\.recovery\.state: expected a string"),
        (("recovery", "bytes"), "many", r"timeline status\.recovery\.bytes: expected an integer"),
        (("recovery", "donor"), True, r"timeline status\.recovery\.donor: expected an integer"),
        (("recovery", "target_lsn"), "x", r"timeline status\.recovery\.target_lsn"),
        (("recovery", "flushed_at"), "now",
         r"timeline status\.recovery\.flushed_at: expected a number"),
    ],
)
def test_a_wrong_field_is_named_in_the_error(
    path: tuple[str, ...], value: object, message: str
) -> None:
    doc = copy.deepcopy(DOC)
    obj = doc
    for key in path[:-1]:
        inner = obj[key]
        assert isinstance(inner, dict)
        obj = inner
    obj[path[-1]] = value
    with pytest.raises(ValueError, match=message):
        parse_timeline_status(doc)


def test_a_document_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError, match="timeline status: expected a JSON object"):
        parse_timeline_status([])
