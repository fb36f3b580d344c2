"""The curated facades: sorted ``__all__`` lists whose every name resolves (STYLE.md 5)."""

from __future__ import annotations

import importlib
import types

import pytest

import safekeeper_recovery
import safekeeper_recovery.core

FACADES = [safekeeper_recovery, safekeeper_recovery.core]
REQUIRED = {
    "Lsn",
    "NodeId",
    "TenantId",
    "TermHistory",
    "TermLsn",
    "TimelineId",
    "find_highest_common_point",
}
CORE_MODULES = [
    "_acceptor",
    "_codec",
    "_donors",
    "_errors",
    "_groups",
    "_history",
    "_ids",
    "_lsn",
    "_messages",
    "_state",
]


@pytest.mark.parametrize("facade", FACADES, ids=lambda m: m.__name__)
def test_all_is_sorted_without_duplicates(facade: types.ModuleType) -> None:
    names = list(facade.__all__)
    assert names == sorted(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("facade", FACADES, ids=lambda m: m.__name__)
def test_every_name_in_all_resolves(facade: types.ModuleType) -> None:
    missing = [name for name in facade.__all__ if not hasattr(facade, name)]
    assert missing == []


@pytest.mark.parametrize("facade", FACADES, ids=lambda m: m.__name__)
def test_all_contains_the_basic_types(facade: types.ModuleType) -> None:
    assert set(facade.__all__) >= REQUIRED


def test_top_level_names_are_the_core_objects() -> None:
    for name in REQUIRED:
        assert getattr(safekeeper_recovery, name) is getattr(safekeeper_recovery.core, name)
    assert isinstance(safekeeper_recovery.__version__, str)


def test_core_all_lists_every_public_name_the_core_facade_imports() -> None:
    core = safekeeper_recovery.core
    public = {
        name
        for name, value in vars(core).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(core.__all__)


@pytest.mark.parametrize("module_name", CORE_MODULES)
def test_each_core_module_all_is_sorted_and_reexported(module_name: str) -> None:
    module = importlib.import_module(f"safekeeper_recovery.core.{module_name}")
    names = list(module.__all__)
    assert names == sorted(names)
    assert len(names) == len(set(names))
    assert set(names) <= set(safekeeper_recovery.core.__all__)
    for name in names:
        assert getattr(module, name) is getattr(safekeeper_recovery.core, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from safekeeper_recovery.core import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(safekeeper_recovery.core.__all__)
