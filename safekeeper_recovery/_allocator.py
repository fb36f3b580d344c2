"""Keep freed heap memory in the process instead of returning it to the kernel at once.

Every WAL message is a fresh megabyte-sized ``bytes`` object (received, decoded, masked,
framed), freed a moment later. glibc's malloc gives such memory back to the kernel as soon
as more than twice its (dynamic) mmap threshold is free at the top of the heap, so the
next message faults every page in again: ``propose`` to three nodes took 770,000 minor page
faults per GiB of WAL, and 2.9 s/GiB of kernel time, most of it those faults (on virtual
machines a fault on a page the guest handed back is also a host fault). Raising the trim
threshold and pinning the mmap threshold keeps a few dozen MiB of freed memory for reuse:
29,000 faults and 1.1 s/GiB of kernel time in the same run. Peak RSS does not change (the
kept memory was in use at the peak); RSS after a burst stays near that peak instead of
falling back.

:func:`tune_allocator` is called by the command line for every command (the root group's
callback, which also covers ``demo`` and ``bench``); a program that imports the library may
call it at start-up. Importing never calls it (``tests/test_import_side_effects.py``). Only
glibc has ``mallopt``; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Final

__all__ = ["tune_allocator"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
TRIM_THRESHOLD: Final = 128 << 20
"""Free memory at the top of the heap that malloc keeps rather than returns."""
MMAP_THRESHOLD: Final = 32 << 20
"""Allocations this large or larger get their own mapping (glibc's largest allowed value);
WAL messages (up to 1 MiB) and store batches (4 MiB) stay on the heap and are reused."""


def tune_allocator() -> bool:
    """Apply the thresholds above with glibc's ``mallopt``; False where there is none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt, macOS no libc.so)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not ok:  # pragma: no cover - glibc accepts both values
        log.warning("mallopt refused the allocator thresholds; continuing without")
    return ok
