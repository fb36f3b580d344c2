"""Stability across runs: the figures of an earlier report, read back to compare with.

Rules:

1. An earlier report is the markdown :func:`~._report.render_markdown` wrote: its first
   table whose header starts ``| figure | median (min-max) |`` holds one row per figure.
   Rows are matched by figure name; figures new in this run have no earlier value.
2. A value reads ``median`` or ``median (min-max)``; anything else (``n/a``, ``a / b``)
   is shown as it was but not compared.
3. The change is this run's median ÷ the earlier median: the stability of a figure across
   two runs, next to its spread over the rounds of each.
"""

from __future__ import annotations

import re

import attrs

__all__ = ["Earlier", "change", "earlier_figures"]

_HEADER = "| figure | median (min-max) |"
_MEDIAN = re.compile(r"^\s*(-?[0-9.]+)(?:\s*\([0-9.eE+-]+-[0-9.eE+-]+\))?\s*$")


@attrs.frozen
class Earlier:
    """The figures of an earlier report and when it was taken."""

    when: str
    """Its ``Date`` line ("" when it has none)."""
    load: str
    """Its ``Load`` line ("" when it has none)."""
    values: dict[str, str]
    """Figure name → its ``median (min-max)`` cell."""


def earlier_figures(markdown: str) -> Earlier:
    """Read an earlier report (rule 1); empty values if it has no figure table."""
    values: dict[str, str] = {}
    when = load = ""
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("- **Date**:"):
            when = line.split(":", 1)[1].strip()
        elif line.startswith("- **Load**"):
            load = line.split(":", 1)[1].strip()
        elif line.startswith(_HEADER) and not values:
            in_table = True
        elif in_table:
            if not line.startswith("|"):
                break
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 2 and not set(cells[0]) <= {"-", ":"}:
                values[cells[0]] = cells[1]
    return Earlier(when, load, values)


def _median(cell: str) -> float | None:
    m = _MEDIAN.match(cell)
    return None if m is None else float(m.group(1))


def change(now: str, before: str | None) -> str:
    """``now`` ÷ ``before`` of two cells as ``1.07x`` (rules 2 and 3), ``""`` if either is
    not a median or the earlier one is zero."""
    if before is None:
        return ""
    a, b = _median(now), _median(before)
    if a is None or b is None or b == 0:
        return ""
    return f"{a / b:.2f}x"
