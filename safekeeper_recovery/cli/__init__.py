"""The ``safekeeper-recovery`` command line (click)."""

from . import _auth, _bench, _demo, _propose, _serve, _sidecar, _timeline, _verify  # noqa: F401  # importing registers the commands
from ._main import main

__all__ = ["main"]
