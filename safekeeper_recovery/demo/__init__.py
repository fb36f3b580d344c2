"""The demos: three local nodes (``safekeeper_recovery.testing``'s launcher); one recovers
(``run_demo``), or a PostgreSQL primary fails over to a standby streaming from them without
losing an acknowledged commit (``run_postgres_demo``, ``run_failover``)."""

from ._demo import DemoResult, cleanup, demo_root, print_summary, run_demo
from ._failover import FailoverResult, run_failover
from ._pg_demo import pg_demo_root, print_failover_summary, run_postgres_demo

__all__ = [
    "DemoResult",
    "FailoverResult",
    "cleanup",
    "demo_root",
    "pg_demo_root",
    "print_failover_summary",
    "print_summary",
    "run_demo",
    "run_failover",
    "run_postgres_demo",
]
