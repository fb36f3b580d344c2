"""``tune_allocator``: freed WAL-sized buffers are reused instead of faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from safekeeper_recovery import tune_allocator

# Allocate, touch and free megabyte buffers the way a WAL stream does, and report the
# minor page faults it took. Run in a fresh interpreter so that nothing else has already
# tuned (or grown) its heap.
_CHILD = """
import resource, sys
from safekeeper_recovery import tune_allocator
if sys.argv[1] == "tuned":
    assert tune_allocator()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(50):
    window = [bytes(bytearray(1 << 20)) for _ in range(16)]  # 16 MiB of messages in flight
    del window                                                # all acknowledged at once
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], check=True,
                         capture_output=True, text=True, timeout=60)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_allocator_reuses_freed_buffers() -> None:
    plain, tuned = _faults("plain"), _faults("tuned")
    # 50 windows of 16 MiB: untuned glibc gives each freed window back to the kernel
    # and faults the next one in again (~200,000 faults); tuned, the first window's
    # memory is reused.
    assert tuned * 5 < plain, (tuned, plain)


def test_tune_allocator_is_safe_to_call_twice() -> None:
    first = tune_allocator()
    assert tune_allocator() == first
