"""Seeded trio scheduling: one seed, one interleaving.

Trio shuffles each batch of runnable tasks with a module-level ``random.Random``. Under
``_ALLOW_DETERMINISTIC_SCHEDULING`` (what pytest-trio sets for hypothesis) it sorts the batch
by task creation order and shuffles with that generator, so seeding it makes the schedule a
function of the seed. Private trio API: if it disappears, the determinism test says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio

__all__ = ["seeded_scheduler"]


@contextmanager
def seeded_scheduler(seed: int) -> Iterator[None]:
    run_mod = trio._core._run  # the only scheduling hook trio has
    saved_flag = run_mod._ALLOW_DETERMINISTIC_SCHEDULING
    saved_state = run_mod._r.getstate()
    run_mod._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]  # pytest-trio does the same
    run_mod._r.seed(f"sim-scheduler:{seed}")
    try:
        yield
    finally:
        run_mod._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag  # type: ignore[misc]  # restore it
        run_mod._r.setstate(saved_state)
