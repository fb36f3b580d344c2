"""The demo (three local nodes, one recovers) and the local-cluster launcher it uses."""

from ._demo import DemoResult, run_demo
from ._local_cluster import LocalCluster, LocalNode, free_port

__all__ = ["DemoResult", "LocalCluster", "LocalNode", "free_port", "run_demo"]
