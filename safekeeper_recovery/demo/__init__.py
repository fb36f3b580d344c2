"""The demo (three local nodes, one recovers) and the local-cluster launcher it uses."""

from ._demo import DemoResult, cleanup, demo_root, print_summary, run_demo
from ._local_cluster import LocalCluster, LocalNode, free_port

__all__ = [
    "DemoResult",
    "LocalCluster",
    "LocalNode",
    "cleanup",
    "demo_root",
    "free_port",
    "print_summary",
    "run_demo",
]
