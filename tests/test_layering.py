"""The layer table of docs/design.md §2, enforced on the import graph (every import: module
level, function-local and ``TYPE_CHECKING`` ones alike, since a hidden edge is still an
edge), and no package reaching into another package's private modules."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import safekeeper_recovery

ROOT = Path(safekeeper_recovery.__file__).parent

ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "pgwal": frozenset({"core"}),
    "storage": frozenset({"core"}),
    "timeline": frozenset({"core", "storage"}),
    "recovery": frozenset({"core"}),
    "pgproto": frozenset({"core"}),
    "transport": frozenset({"core", "pgwal", "pgproto", "storage", "timeline", "recovery"}),
}
"""Lower layers and what they may import of this package (stdlib and third-party imports
are not this test's business; ``core``'s purity test checks those). The upper layers
(``proposer``, ``node``, ``sidecar``, ``cli``, ``postgres``, ``demo``, ``bench``, ``sim``,
``faults``, ``testing``) may import everything below them."""

UPPER = frozenset(
    {"proposer", "node", "sidecar", "cli", "postgres", "demo", "bench", "sim", "faults",
     "testing"}
)


def _imports(path: Path) -> Iterator[tuple[int, tuple[str, ...]]]:
    """``(line, parts)`` of every first-party import in ``path``, as a path below the root
    package (``("transport", "_wal_client")``)."""
    return _imports_in(path.read_text(), path.relative_to(ROOT).parts)


def _imports_in(source: str, rel: tuple[str, ...]) -> Iterator[tuple[int, tuple[str, ...]]]:
    here = rel[:-1]  # the package the module is in
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "safekeeper_recovery":
                    yield node.lineno, tuple(parts[1:])
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".") if node.module else []
            if node.level == 0:
                if module and module[0] == "safekeeper_recovery":
                    base = tuple(module[1:])
                else:
                    continue
            else:
                base = here[: len(here) - (node.level - 1)] + tuple(module)
            if node.module:
                yield node.lineno, base
            else:  # ``from . import x``: each name is a module or package of ``base``
                for alias in node.names:
                    yield node.lineno, (*base, alias.name)


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py"))


def _package(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    return parts[0] if len(parts) > 1 else "(top)"


def test_every_package_is_in_the_table() -> None:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(ALLOWED) | UPPER


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_lower_layer_imports_only_what_the_table_allows(package: str) -> None:
    bad = []
    for path in _modules():
        if _package(path) != package:
            continue
        for line, parts in _imports(path):
            target = parts[0]
            if target == "__version__":  # the root package's own metadata (it imports core)
                continue
            if target != package and target not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {'.'.join(parts)}")
    assert bad == [], f"{package} may import only {sorted(ALLOWED[package])}"


def test_no_package_imports_another_packages_private_modules() -> None:
    bad = []
    for path in _modules():
        package = _package(path)
        for line, parts in _imports(path):
            if parts[0] != package and any(p.startswith("_") for p in parts[1:]):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {'.'.join(parts)}")
    assert bad == []


def test_the_checker_sees_hidden_edges() -> None:
    """A function-local import and a TYPE_CHECKING one are edges too (the old recovery
    package hid 11 of them), and so is an absolute one."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..transport import SafekeeperClient\n"
        "def f():\n    from ..timeline._timeline import Timeline\n"
        "import safekeeper_recovery.node\n"
        "from . import _status\n"
    )
    found = [parts for _, parts in _imports_in(source, ("recovery", "_sample.py"))]
    assert sorted(found) == sorted([("transport",), ("timeline", "_timeline"), ("node",),
                                    ("recovery", "_status")])
