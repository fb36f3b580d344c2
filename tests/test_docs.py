"""The documents a user reads stay true to the code and to the repository.

Every rule a module numbers at its top (R, S, W, E, P, U) has its row in docs/errors.md, and
the links the CLI appends to a code land on those rows; every relative link of README.md
and docs/ reaches a file of the repository (and a heading in it), so nothing points outside
it, such as a design document next to the checkout.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Final

import pytest

from safekeeper_recovery.cli._errors import CODE_ANCHORS, ERRORS_DOC

ROOT: Final = Path(__file__).resolve().parents[1]
PACKAGE: Final = ROOT / "safekeeper_recovery"
DOCUMENTS: Final = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RULE_MODULES: Final = {
    "R": "core/_acceptor.py",
    "S": "pgwal/_synthetic.py",
    "W": "pgwal/_reader.py",
    "E": "proposer/_election.py",
    "P": "proposer/_proposer.py",
    "U": "core/_disk_guard.py",
}
"""Rule letter -> the module whose docstring numbers those rules."""
ROW: Final = re.compile(r'^\| <a id="([a-z]\d+)"></a>([A-Z])(\d+)(?:\u2013\2?(\d+))? \|', re.M)
"""A table row of docs/errors.md: its anchor and the code (or range of codes) it explains."""
LINK: Final = re.compile(r"\]\(([^)\s]+)\)")


def rules_of(module: str, letter: str) -> set[str]:
    """The codes ``module`` numbers in its docstring (lines ``R7  …``)."""
    doc = ast.get_docstring(ast.parse((PACKAGE / module).read_text())) or ""
    return {f"{letter}{n}" for n in re.findall(rf"^{letter}(\d+)\s", doc, re.M)}


def documented() -> dict[str, str]:
    """Code -> the anchor of the row of docs/errors.md that explains it."""
    rows: dict[str, str] = {}
    for anchor, letter, first, last in ROW.findall((ROOT / ERRORS_DOC).read_text()):
        for n in range(int(first), int(last or first) + 1):
            rows[f"{letter}{n}"] = anchor
    return rows


def slug(heading: str) -> str:
    """The anchor GitHub gives a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors_of(document: Path) -> set[str]:
    text = document.read_text()
    headings = {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    return headings | set(re.findall(r'<a id="([^"]+)"', text))


@pytest.mark.parametrize(("letter", "module"), RULE_MODULES.items())
def test_every_numbered_rule_has_its_row_in_docs_errors_md(letter: str, module: str) -> None:
    rules = rules_of(module, letter)
    assert len(rules) >= 3, f"{module}: no numbered {letter} rules found in its docstring"
    rows = {code for code in documented() if code.startswith(letter)}
    assert rows == rules, f"{ERRORS_DOC} rows {sorted(rows)} vs {module} {sorted(rules)}"


def test_the_link_the_cli_appends_to_a_code_lands_on_its_row() -> None:
    rows = documented()
    assert set(CODE_ANCHORS) == set(rows)
    for code, anchor in CODE_ANCHORS.items():
        assert rows[code] == anchor, f"{code} links to #{anchor}, its row is #{rows[code]}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=[d.name for d in DOCUMENTS])
def test_every_relative_link_reaches_a_file_of_the_repository(document: Path) -> None:
    for target in LINK.findall(document.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, fragment = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        assert resolved.is_relative_to(ROOT), f"{document.name}: {target} leaves the repository"
        assert resolved.exists(), f"{document.name}: {target} does not exist"
        if fragment and resolved.suffix == ".md":
            assert fragment in anchors_of(resolved), f"{document.name}: no #{fragment} in {path}"


def test_nothing_in_the_repository_names_the_shared_directory_next_to_it() -> None:
    files = [*DOCUMENTS, ROOT / "pyproject.toml", ROOT / "noxfile.py",
             *PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    outside = re.compile(r"\.\./shared|/work/shared")
    found = [f.relative_to(ROOT) for f in files
             if f != Path(__file__).resolve() and outside.search(f.read_text())]
    assert found == [], f"these name ../shared, which is not in the repository: {found}"
