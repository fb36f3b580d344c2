"""The real-network fault campaign (docs/faults.md): ``serve`` nodes and a proposer, each in
its own network namespace, under a seeded nemesis (partitions, loss, slow links, pauses,
kills, proposer restarts), then healed and checked.

The schedule (``plan``) and the checker (``check``) are pure; ``Network`` owns the
namespaces and rules; ``run_schedule`` runs one schedule; ``write_report`` writes its
``report.md`` and ``timeline.png``.
"""

from ._campaign import Band, CampaignConfig, RunResult, Sample, Tamper, run_schedule
from ._check import Evidence, NodeEnd, Violation, check, expected_digest
from ._cluster import SEG_SIZE, START_LSN, TTID, NetCluster, open_cluster
from ._network import Network, unavailable_reason
from ._report import replay_command, write_report
from ._schedule import KINDS, PROPOSER, Fault, FaultKind, Schedule, plan
from ._workload import ProposerRun, Workload, parse_summary

__all__ = [
    "Band",
    "CampaignConfig",
    "Evidence",
    "Fault",
    "FaultKind",
    "KINDS",
    "NetCluster",
    "Network",
    "NodeEnd",
    "PROPOSER",
    "ProposerRun",
    "RunResult",
    "SEG_SIZE",
    "START_LSN",
    "Sample",
    "Schedule",
    "TTID",
    "Tamper",
    "Violation",
    "Workload",
    "check",
    "expected_digest",
    "open_cluster",
    "parse_summary",
    "plan",
    "replay_command",
    "run_schedule",
    "unavailable_reason",
    "write_report",
]
