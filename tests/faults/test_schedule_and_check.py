"""The campaign's pure parts: the nemesis schedule (rules N1-N4) and the checker (C-a..C-l)."""

from __future__ import annotations

import ast
import hashlib
import pathlib

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import safekeeper_recovery.faults as faults
from safekeeper_recovery.core import Lsn, TermHistory, TermLsn
from safekeeper_recovery.faults import (
    KINDS,
    PROPOSER,
    Evidence,
    NodeEnd,
    check,
    expected_digest,
    parse_summary,
    plan,
)
from safekeeper_recovery.proposer import WalGenerator, WalSource

PURE = ("_schedule.py", "_check.py")
ALLOWED_IMPORTS = {"__future__", "attrs", "collections", "collections.abc", "hashlib",
                   "random", "typing", "core", "proposer"}


@pytest.mark.parametrize("module", PURE)
def test_schedule_and_checker_import_no_io(module: str) -> None:
    path = pathlib.Path(faults.__file__).parent / module
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    assert names <= ALLOWED_IMPORTS, f"{module} imports {names - ALLOWED_IMPORTS}"


def test_faults_facade_all_is_sorted_and_resolves() -> None:
    assert list(faults.__all__) == sorted(faults.__all__)
    assert [n for n in faults.__all__ if not hasattr(faults, n)] == []


@given(st.integers(0, 2**32), st.sampled_from([3, 5]), st.floats(5.0, 120.0))
def test_n1_faults_follow_one_another_within_the_run(seed: int, nodes: int,
                                                      duration: float) -> None:
    schedule = plan(seed, nodes=nodes, duration=duration)
    assert schedule == plan(seed, nodes=nodes, duration=duration)  # same seed, same plan
    previous_end = 2.0
    for fault in schedule.faults:
        assert fault.start >= previous_end + 0.49, f"N1: {fault} overlaps the one before"
        assert fault.end <= duration, f"N1: {fault} ends after the run"
        previous_end = fault.end


@given(st.integers(0, 2**32), st.sampled_from([3, 5]))
def test_n2_n3_targets(seed: int, nodes: int) -> None:
    for fault in plan(seed, nodes=nodes, duration=120.0).faults:
        ids = [n for n in fault.nodes if n != PROPOSER]
        assert all(1 <= n <= nodes for n in ids)
        if fault.kind == "partition":
            assert 1 <= len(ids) <= (nodes - 1) // 2, f"N2: {fault} cuts off no minority"
        if fault.kind == "one_way":
            assert len(set(fault.nodes)) == 2, f"N3: {fault}"


def test_sixty_seconds_draw_every_kind_over_a_few_seeds() -> None:
    drawn: set[str] = set()
    for seed in range(5):
        drawn.update(plan(seed, duration=60.0).counts())
    assert drawn == set(KINDS)


def test_plan_refuses_an_even_cluster() -> None:
    with pytest.raises(ValueError, match="odd"):
        plan(0, nodes=4)


def test_summary_line_is_parsed() -> None:
    line = ("term 3: wrote 65536 bytes 0/1368095..0/1378095 in 0.52s (0.1 MiB/s), "
            "commit_lsn 0/1378095; flush: ws://10.213.1.11:5454=0/1378095")
    assert parse_summary(line) == (3, Lsn(0x1368095), Lsn(0x1378095))
    assert parse_summary("Error: lost quorum") is None


# -- the checker ---------------------------------------------------------------------------

START = Lsn(0x1000000)
HISTORY = TermHistory([TermLsn(1, START), TermLsn(3, Lsn(0x1000100))])


def source(term_start: Lsn, _history: TermHistory) -> WalSource:
    return WalGenerator(7, 1 << 20)


def wal(until: int) -> bytes:
    """What the two terms of HISTORY wrote up to ``until``."""
    first = WalGenerator(7, 1 << 20).read(0, 0x100)
    return (first + WalGenerator(7, 1 << 20).read(0, until - 0x1000100))[: until - START]


def test_expected_digest_takes_each_term_from_its_own_start() -> None:
    until = Lsn(0x1000300)
    assert expected_digest(HISTORY, until, source, chunk=64) == hashlib.sha256(
        wal(until)).hexdigest()


def clean(nodes: int = 3) -> Evidence:
    digest = expected_digest(HISTORY, Lsn(0x1000300), source)
    return Evidence(
        tuple(NodeEnd(i, Lsn(0x1000300), HISTORY, digest, 0, 20, 21) for i in range(1, 4)),
        Lsn(0x1000300), digest, tuple(("n1", e) for e in HISTORY), 1.5, 30.0, 0,
    )


def test_a_clean_run_breaks_no_rule() -> None:
    assert check(clean()) == ()


def test_ca_wrong_bytes_on_two_of_three_nodes() -> None:
    ev = clean()
    bad = [attrs.evolve(n, committed_digest="0" * 64) if n.node_id != 1 else n for n in ev.nodes]
    assert [v.rule for v in check(attrs.evolve(ev, nodes=tuple(bad)))] == ["C-a"]


def test_ca_one_bad_node_is_still_a_quorum_but_not_converged() -> None:
    ev = clean()
    bad = [attrs.evolve(n, committed_digest=None) if n.node_id == 3 else n for n in ev.nodes]
    assert check(attrs.evolve(ev, nodes=tuple(bad), converged_after=None)) != ()
    assert check(attrs.evolve(ev, nodes=tuple(bad))) == ()


def test_cc_two_leaders_of_one_term() -> None:
    ev = clean()
    seen = (*ev.histories, ("proposer run 4", TermLsn(3, Lsn(0x1000200))))
    (violation,) = check(attrs.evolve(ev, histories=seen))
    assert violation.rule == "C-c"
    assert "term 3 had two leaders" in violation.message


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"verify_rc": 1}, "C-d"),
        ({"exit_code": -9}, "C-e"),
        ({"tracebacks": 1}, "C-e"),
        ({"fds_end": 40}, "C-e"),
    ],
)
def test_node_level_rules(change: dict[str, int], rule: str) -> None:
    ev = clean()
    nodes = (attrs.evolve(ev.nodes[0], **change), *ev.nodes[1:])  # type: ignore[arg-type]  # reason: a dict of field values
    assert [v.rule for v in check(attrs.evolve(ev, nodes=nodes))] == [rule]


def test_cl_a_proposer_that_cannot_finish_after_healing() -> None:
    assert [v.rule for v in check(attrs.evolve(clean(), liveness_rc=1))] == ["C-l"]
