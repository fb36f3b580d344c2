"""The persistent state (control-file body) and its JSON codec."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from safekeeper_recovery.core import (
    CorruptionError,
    Lsn,
    PersistentState,
    ServerInfo,
    StorageError,
    TenantId,
    TermHistory,
    TimelineId,
    decode_state,
    encode_state,
)

from ._strategies import persistent_states

TENANT = TenantId(bytes(range(16)))
TIMELINE = TimelineId(bytes(range(16, 32)))
START = Lsn(0x1000000)


def _good_doc() -> dict[str, Any]:
    state = attrs.evolve(
        PersistentState.new_timeline(TENANT, TIMELINE, START, ServerInfo(160002, 7, 1 << 24)),
        term=3,
        term_history=TermHistory.of((0, START), (3, START + 0x100)),
    )
    doc: dict[str, Any] = json.loads(encode_state(state))
    return doc


def _body(doc: object) -> bytes:
    return json.dumps(doc).encode()


@given(persistent_states)
def test_state_round_trips(state: PersistentState) -> None:
    assert decode_state(encode_state(state)) == state


def test_encoding_is_compact_sorted_json_with_text_ids_and_integer_lsns() -> None:
    state = PersistentState.new_timeline(TENANT, TIMELINE, START, ServerInfo(160002, 7, 1 << 24))
    body = encode_state(state)
    doc = json.loads(body)
    assert body == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert doc["tenant_id"] == str(TENANT)
    assert doc["timeline_id"] == str(TIMELINE)
    assert doc["term_history"] == [[0, 0x1000000]]
    assert doc["commit_lsn"] == 0x1000000
    assert doc["server"] == {"pg_version": 160002, "system_id": 7, "wal_seg_size": 1 << 24}


def test_new_timeline_starts_in_term_0_with_one_history_entry_at_its_start() -> None:
    state = PersistentState.new_timeline(TENANT, TIMELINE, START, ServerInfo())
    assert state.term == 0
    assert state.term_history == TermHistory.of((0, START))
    assert state.timeline_start_lsn == state.local_start_lsn == state.commit_lsn == START
    assert state.backup_lsn == state.peer_horizon_lsn == START
    assert state.server.wal_seg_size == 16 * 1024 * 1024


def test_the_helper_document_decodes() -> None:
    assert decode_state(_body(_good_doc())).term == 3


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b"[]",
        b"null",
        b'"a string"',
        b"42",
        b"{}",
        pytest.param(b"[" * 100_000, id="nested-too-deep"),
    ],
)
def test_bodies_that_are_not_a_state_document_raise_corruption_error(body: bytes) -> None:
    with pytest.raises(CorruptionError, match="control file body does not decode"):
        decode_state(body)


@pytest.mark.parametrize("key", sorted(_good_doc()))
def test_a_missing_field_raises_corruption_error(key: str) -> None:
    doc = _good_doc()
    del doc[key]
    with pytest.raises(CorruptionError):
        decode_state(_body(doc))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("term", -1),
        ("term", 2**64),
        ("term", 1.0),
        ("term", True),
        ("term", "3"),
        ("term", None),
        ("commit_lsn", -5),
        ("commit_lsn", 2**64),
        ("commit_lsn", "0/1000"),
        ("tenant_id", "../" + "0" * 29),
        ("tenant_id", "0" * 31),
        ("tenant_id", 5),
        ("timeline_id", "G" * 32),
        ("term_history", [[3, 10], [2, 20]]),
        ("term_history", [[1, 20], [2, 10]]),
        ("term_history", [[1, 2, 3]]),
        ("term_history", [[1]]),
        ("term_history", [1, 2]),
        ("term_history", "ab"),
        ("term_history", {"1": 2}),
        ("term_history", [[-1, 0]]),
        ("server", None),
        ("server", []),
        ("server", {"pg_version": 1, "system_id": 2}),
        ("server", {"pg_version": 1, "system_id": -2, "wal_seg_size": 3}),
    ],
)
def test_a_field_of_the_wrong_type_or_range_raises_corruption_error(
    key: str, value: object
) -> None:
    doc = _good_doc()
    doc[key] = value
    with pytest.raises(CorruptionError):
        decode_state(_body(doc))


def test_corruption_error_is_a_storage_error() -> None:
    assert issubclass(CorruptionError, StorageError)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(st.sampled_from(sorted(_good_doc())), json_values)
def test_any_replaced_field_either_decodes_or_raises_corruption_error(
    key: str, value: object
) -> None:
    doc = _good_doc()
    doc[key] = value
    try:
        state = decode_state(_body(doc))
    except CorruptionError:
        return
    assert encode_state(state) == encode_state(decode_state(encode_state(state)))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_either_decode_or_raise_corruption_error(body: bytes) -> None:
    with contextlib.suppress(CorruptionError):
        state = decode_state(body)
        assert decode_state(encode_state(state)) == state


@pytest.mark.parametrize("value", [-1, 2**64])
def test_a_state_outside_the_u64_range_cannot_be_built_so_it_is_never_persisted(
    value: int,
) -> None:
    state = PersistentState.new_timeline(TENANT, TIMELINE, Lsn(1), ServerInfo())
    with pytest.raises(ValueError, match="term out of u64 range"):
        attrs.evolve(state, term=value)
    with pytest.raises(ValueError, match="system_id out of u64 range"):
        ServerInfo(system_id=value)
