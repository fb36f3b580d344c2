"""Raising the process's soft limit on open files (``RLIMIT_NOFILE``) to its hard limit.

A node holds descriptors for its connections and for every timeline's files; the soft
limit many systems start processes with (1,024) is far below what 2,000 idle clients and a
few hundred timelines need, while the hard limit is usually generous. Process-wide state:
the ``serve`` command opts in at start (never on import, never by the library).
"""

from __future__ import annotations

import logging
import resource

__all__ = ["raise_fd_limit"]

log = logging.getLogger(__name__)


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the soft limit now in
    force. Never raises: where the system refuses, the limit stays and a warning says so."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or soft == resource.RLIM_INFINITY:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as e:
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, e)
        return soft
    log.info("open-files limit raised from %d to %d", soft, hard)
    return hard
