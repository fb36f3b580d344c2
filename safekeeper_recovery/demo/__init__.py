"""The demo: three local nodes (``safekeeper_recovery.testing``'s launcher), one recovers.

``LocalNode`` (``_local_cluster.py``) remains only for the fault campaign (``faults``),
which launches nodes in network namespaces; the demo, the benchmarks and the tests use
``safekeeper_recovery.testing``.
"""

from ._demo import DemoResult, cleanup, demo_root, print_summary, run_demo
from ._local_cluster import LocalNode

__all__ = [
    "DemoResult",
    "LocalNode",
    "cleanup",
    "demo_root",
    "print_summary",
    "run_demo",
]
