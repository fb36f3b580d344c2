"""Samples of one measured quantity across rounds: median with min-max, and ratios."""

from __future__ import annotations

import statistics

import attrs

__all__ = ["Samples", "ratio"]


@attrs.define
class Samples:
    """Values of one figure (e.g. MB/s of pg_receivewal), one per round or trial."""

    name: str
    unit: str
    values: list[float] = attrs.Factory(list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def describe(self, fmt: str = ".1f") -> str:
        """``median (min-max)``, or ``n/a`` with no samples."""
        if not self.values:
            return "n/a"
        if len(self.values) == 1:
            return f"{self.values[0]:{fmt}}"
        return (
            f"{self.median:{fmt}} ({min(self.values):{fmt}}-{max(self.values):{fmt}})"
        )


def ratio(numerator: Samples, denominator: Samples) -> Samples:
    """Per-round ratios (rounds pair up by position: they ran in the same window)."""
    out = Samples(f"{numerator.name} ÷ {denominator.name}", "x")
    for a, b in zip(numerator.values, denominator.values, strict=False):
        if b > 0:
            out.add(a / b)
    return out
