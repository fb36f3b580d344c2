"""Reading a node's ``/metrics`` page (Prometheus text format) in the real-process tests.

Rules:

1. :func:`metric` sums every sample of a metric name over its label sets; a name written
   with labels (``name{kind="x"}``) matches only that label set, exactly as written.
2. A metric absent from the page sums to 0.0: a counter that was never incremented is not
   an error here (a test that needs the line asserts on the text itself).
"""

from __future__ import annotations

__all__ = ["metric"]


def metric(text: str, name: str) -> float:
    """The sum of ``name``'s samples (every label set) in a Prometheus text page."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + " ", name + "{")))
