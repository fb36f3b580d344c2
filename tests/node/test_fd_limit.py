"""``raise_fd_limit``: the soft open-files limit goes up to the hard one, and only when
called (importing the package changes nothing). In a child process: it is process-wide."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

CHILD = """
import json, resource
before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
import safekeeper_recovery, safekeeper_recovery.cli
from safekeeper_recovery.node import raise_fd_limit
imported = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
returned = raise_fd_limit()
after = resource.getrlimit(resource.RLIMIT_NOFILE)
print(json.dumps([before, imported, returned, after[0], after[1]]))
"""


def test_the_soft_limit_is_raised_to_the_hard_one_only_when_asked() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True,
        preexec_fn=low_soft_limit, timeout=60,
    )
    before, imported, returned, soft_after, hard_after = json.loads(done.stdout)
    assert (before, imported) == (256, 256), "importing must not change process state"
    assert returned == soft_after == hard_after == hard
