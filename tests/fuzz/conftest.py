"""Shared set-up for the fuzz tests: a deterministic hypothesis profile and the real node.

Fuzz examples are derandomized and use no example database, so a CI run is repeatable
and needs no state; network examples have no per-example deadline (a loaded 2-core machine
must not turn slowness into failures; hangs are caught by explicit ``trio.fail_after``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from ._node_thread import NodeThread

# See tests/core/conftest.py: a failing property must print its example, not an
# INTERNALERROR from a deprecation warning inside hypothesis' patch writer.
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    import hypothesis.extra._patching  # noqa: F401

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Base settings of every fuzz test; each sets its own ``max_examples``."""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeThread]:
    """One real node for the whole module, in its own thread (see ``_node_thread``)."""
    running = NodeThread(Path(tmp_path_factory.mktemp("fuzz-node")))
    running.start()
    try:
        yield running
    finally:
        running.stop()
