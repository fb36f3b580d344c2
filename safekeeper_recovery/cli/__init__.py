"""The ``safekeeper-recovery`` command line (click)."""

from ._main import main

__all__ = ["main"]
