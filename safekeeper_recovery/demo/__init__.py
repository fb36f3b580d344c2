"""The demo: three local nodes (``safekeeper_recovery.testing``'s launcher), one recovers."""

from ._demo import DemoResult, cleanup, demo_root, print_summary, run_demo

__all__ = [
    "DemoResult",
    "cleanup",
    "demo_root",
    "print_summary",
    "run_demo",
]
