"""The ``safekeeper-recovery`` command line (click)."""

from . import (  # noqa: F401  # importing registers the commands
    _auth,
    _bench,
    _demo,
    _propose,
    _pull,
    _restore_wal,
    _serve,
    _sidecar,
    _status,
    _sync,
    _timeline,
    _verify,
)
from ._main import main

__all__ = ["main"]
