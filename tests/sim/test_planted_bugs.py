"""Planted bugs: the simulator catches each one, and each invariant check is needed.

Planted-bug runs switch on the fault points that expose a bug in every seed
(``forced_faults``: all of them, or only dueling proposers for ``double_vote``, whose other
faults mostly make the proposer itself refuse the broken votes first); everything else is
the CI configuration. Ranges are what is searched, not
results: a test walks its range and asserts what it finds (seeds are deterministic, so the
same code finds the same thing every time; a product change that moves the catch to another
seed in the range still passes).
"""

from __future__ import annotations

import pytest

from safekeeper_recovery.sim import (
    FAULT_POINTS,
    INVARIANTS,
    PLANTED_BUGS,
    PlantedBugs,
    SimConfig,
    SimResult,
    run_seed,
)

ALL_FAULTS = frozenset(FAULT_POINTS)
FAULTS = {"double_vote": frozenset({"dueling_proposers"})}
"""Fault points forced on per bug (default: all)."""

BUDGET = range(0, 64)
"""Seeds searched per planted bug (each catch ends its run early)."""

CAUGHT_BY = {
    "vote_before_durable": {"terms_never_decrease", "log_matching"},
    "no_sender_term_check": {"log_matching"},
    "commit_regresses": {"commit_monotonic_and_flushed"},
    "double_vote": {"one_leader_per_term"},
    "recovery_stops_early": {"convergence"},
    "flush_not_durable": {"committed_never_truncated"},
    "refusal_stops_proposer": {"proposer_stop_explained"},
    "recovery_ignores_proposer": {"no_recovery_interference"},
}
"""Which invariant reports each bug first (the report names it)."""

SOLE_CATCHER = {
    "terms_never_decrease": "vote_before_durable",
    "commit_monotonic_and_flushed": "commit_regresses",
    "committed_never_truncated": "flush_not_durable",
    "log_matching": "no_sender_term_check",
    "convergence": "recovery_stops_early",
    "proposer_stop_explained": "refusal_stops_proposer",
    "proposer_liveness": "refusal_stops_proposer",
    "no_recovery_interference": "recovery_ignores_proposer",
}
"""For each check, a planted bug that only this check catches on some seed of the budget.

``one_leader_per_term`` has none and cannot have one: two leaders of one term write two
different streams labelled with that term, which ``log_matching`` also sees (later). It is
the first catcher of ``double_vote`` (asserted above), at the election itself.
"""

ALSO_OFF = {"proposer_liveness": frozenset({"proposer_stop_explained"})}
"""Checks switched off too when proving a check is needed. A proposer stopped for no reason
is seen first by ``proposer_stop_explained`` (at the stop) and then by
``proposer_liveness`` (at the end of the live phase): liveness is proved needed for a bug
that I6 does not see (a stop without a newer term would be one), so I6 is off for it."""


def planted(bug: str, *, disabled: frozenset[str] = frozenset()) -> SimConfig:
    return SimConfig(
        bugs=PlantedBugs.only(bug),
        forced_faults=FAULTS.get(bug, ALL_FAULTS),
        disabled_invariants=disabled,
    )


def first_catch(bug: str) -> SimResult:
    for seed in BUDGET:
        result = run_seed(seed, planted(bug))
        if not result.ok:
            return result
    pytest.fail(f"planted bug {bug} was not caught in seeds {BUDGET}")


def test_every_planted_bug_is_covered_here() -> None:
    assert set(CAUGHT_BY) == set(PLANTED_BUGS)
    assert len(PLANTED_BUGS) >= 6


@pytest.mark.parametrize("bug", sorted(CAUGHT_BY))
def test_the_simulator_catches_the_planted_bug_within_the_budget(bug: str) -> None:
    result = first_catch(bug)
    assert result.violation is not None
    assert result.violation.invariant in CAUGHT_BY[bug], result.report()
    report = result.report()
    assert f"first broken invariant: {result.violation.invariant}" in report
    assert f"--first-seed {result.seed} --bug {bug}" in report


def test_each_invariant_check_but_one_leader_per_term_is_the_sole_catcher_of_a_bug() -> None:
    assert set(SOLE_CATCHER) | {"one_leader_per_term"} == set(INVARIANTS)


@pytest.mark.parametrize("invariant", sorted(SOLE_CATCHER))
def test_without_this_check_its_planted_bug_escapes_on_a_seed_it_catches(invariant: str) -> None:
    """Walk the budget: the first seed this check catches and nothing else would is the
    proof that removing the check lets the bug through."""
    bug = SOLE_CATCHER[invariant]
    also = ALSO_OFF.get(invariant, frozenset())
    tried = []
    for seed in BUDGET:
        caught = run_seed(seed, planted(bug, disabled=also))
        if caught.violation is None or caught.violation.invariant != invariant:
            continue
        without = run_seed(seed, planted(bug, disabled=also | {invariant}))
        if without.ok:
            return  # caught only by this check: without it the bug escapes this seed
        assert without.violation is not None
        tried.append(f"seed {seed}: also caught by {without.violation.invariant}")
    pytest.fail(f"{invariant} was never the sole catcher of {bug} in {BUDGET}: {tried}")
