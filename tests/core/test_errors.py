"""The one error hierarchy: the drawing in ``_errors``' docstring is the truth (STYLE.md 4)."""

from __future__ import annotations

import re

import pytest

from safekeeper_recovery import core
from safekeeper_recovery.core import (
    AuthError,
    DonorUnavailable,
    NoCommonPoint,
    ProposerArrived,
    RecoveryError,
    RemoteProtocolError,
    SafekeeperError,
    TermChanged,
    _errors,
)


def _drawn_parents() -> dict[str, str | None]:
    """Each class in the docstring tree, mapped to the class drawn as its parent."""
    doc = _errors.__doc__
    assert doc is not None
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        # "<tree drawing><ClassName>   <description>"; the name's column is its depth.
        match = re.match(r"([\s│├└─]*)([A-Z]\w+)\s{2,}", line)
        if match is None:
            continue
        depth, name = match.start(2), match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    return parents


def test_the_docstring_draws_every_error_class() -> None:
    drawn = _drawn_parents()
    assert set(drawn) == set(_errors.__all__)
    assert drawn["SafekeeperError"] is None


@pytest.mark.parametrize("name", sorted(_errors.__all__))
def test_each_error_subclasses_exactly_what_the_drawing_says(name: str) -> None:
    parent = _drawn_parents()[name]
    cls = getattr(core, name)
    if parent is None:
        assert cls.__bases__ == (Exception,)
    else:
        assert cls.__bases__ == (getattr(core, parent),)


def test_remote_protocol_error_carries_a_close_code_hint() -> None:
    assert RemoteProtocolError("bad").close_code == 1002
    assert RemoteProtocolError("big", close_code=1009).close_code == 1009


def test_auth_error_carries_an_http_status() -> None:
    assert AuthError("no token").status == 401
    assert AuthError("wrong scope", status=403).status == 403
    assert isinstance(AuthError("x"), SafekeeperError)


def test_recovery_outcomes_are_types_with_metric_names() -> None:
    outcomes = {
        cls.outcome for cls in (TermChanged, NoCommonPoint, DonorUnavailable, ProposerArrived)
    }
    assert outcomes == {"term_changed", "no_common_point", "donor_error", "proposer_arrived"}
    assert RecoveryError.outcome == "error"
