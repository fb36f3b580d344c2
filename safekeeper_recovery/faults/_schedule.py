"""The nemesis schedule: which fault, when, on whom. Pure: same seed, same schedule.

Rules
-----
N1  Faults follow one another: each one is healed before the next starts, with a gap of
    0.5-2 s between them, so a run's picture reads as one band after another and a failure
    names one fault. The first starts after ``warmup`` seconds; none ends after
    ``duration``.
N2  A partition cuts a minority (1 .. (n-1)/2 nodes) off from everyone else; in a third of
    them the proposer is on the minority side, so it loses its quorum and must come back.
N3  A one-way partition drops packets from ``sender`` at ``receiver`` only (either may be
    the proposer, id 0, but not both): TCP's handshake fails one way, an open connection
    stalls one way, which is what makes half-open connections.
N4  Loss drops ``amount`` % of a node's packets both ways; slow throttles (or delays, where
    the kernel has netem) a node's outgoing link at ``amount`` kbit/s; pause SIGSTOPs a node
    and SIGCONTs it at the end; kill SIGKILLs it and restarts it at the end; a proposer
    restart SIGKILLs the running proposer (the workload starts the next one at once).
N5  The observer (the harness's own address) is never partitioned, so it sees every node
    that is running and not paused.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Final, Literal, final, get_args

import attrs

__all__ = ["KINDS", "PROPOSER", "Fault", "FaultKind", "Schedule", "plan"]

FaultKind = Literal["partition", "one_way", "loss", "slow", "pause", "kill", "proposer_restart"]
KINDS: Final[tuple[FaultKind, ...]] = get_args(FaultKind)
PROPOSER: Final = 0
"""The proposer's id in ``Fault.nodes`` (nodes are 1..n)."""


@final
@attrs.frozen
class Fault:
    """One fault from ``start`` until ``end`` (seconds since the run began).

    ``nodes``: partition: the minority side (``PROPOSER`` among them if it is cut off with
    them); one_way: ``(receiver, sender)``; the others: the one target.
    ``amount``: loss: percent; slow: kbit/s; otherwise 0.
    """

    kind: FaultKind
    start: float
    end: float
    nodes: tuple[int, ...]
    amount: int = 0

    def __str__(self) -> str:
        who = {
            "partition": "{" + ",".join(_name(n) for n in self.nodes) + "} | rest",
            "one_way": f"{_name(self.nodes[-1])} -> {_name(self.nodes[0])} dropped",
        }.get(self.kind, ",".join(_name(n) for n in self.nodes))
        extra = {"loss": f" {self.amount}%", "slow": f" {self.amount}kbit/s"}.get(self.kind, "")
        return f"{self.start:6.1f}-{self.end:6.1f}s {self.kind} {who}{extra}"


def _name(node: int) -> str:
    return "proposer" if node == PROPOSER else f"n{node}"


@final
@attrs.frozen
class Schedule:
    """The faults of one run, in order (rule N1)."""

    seed: int
    nodes: int
    duration: float
    faults: tuple[Fault, ...]

    def counts(self) -> Counter[str]:
        return Counter(f.kind for f in self.faults)


def plan(
    seed: int,
    *,
    nodes: int = 3,
    duration: float = 60.0,
    kinds: tuple[FaultKind, ...] = KINDS,
    warmup: float = 2.0,
) -> Schedule:
    """The schedule of ``seed``: rules N1-N4 over ``nodes`` nodes for ``duration`` seconds.

    Raises ``ValueError`` for fewer than 3 nodes, an even count, or no kinds.
    """
    if nodes < 3 or nodes % 2 == 0:
        raise ValueError(f"need an odd number of nodes, at least 3: {nodes}")
    if not kinds:
        raise ValueError("no fault kinds to draw from")
    rng = random.Random(f"faults:{seed}:{nodes}")
    ids = list(range(1, nodes + 1))
    faults: list[Fault] = []
    t = warmup
    while True:
        start = t + rng.uniform(0.5, 2.0)
        kind = rng.choice(kinds)
        length = 0.3 if kind == "proposer_restart" else rng.uniform(1.5, 6.0)
        if start + length > duration:
            break
        faults.append(Fault(kind, round(start, 2), round(start + length, 2),
                            *_targets(rng, kind, ids)))
        t = start + length
    return Schedule(seed, nodes, duration, tuple(faults))


def _targets(rng: random.Random, kind: FaultKind, ids: list[int]) -> tuple[tuple[int, ...], int]:
    if kind == "partition":
        minority = sorted(rng.sample(ids, rng.randint(1, (len(ids) - 1) // 2)))
        if rng.random() < 1 / 3:
            minority.insert(0, PROPOSER)
        return tuple(minority), 0
    if kind == "one_way":
        receiver, sender = rng.sample([PROPOSER, *ids], 2)
        return (receiver, sender), 0
    if kind == "proposer_restart":
        return (PROPOSER,), 0
    target = (rng.choice(ids),)
    if kind == "loss":
        return target, rng.choice((10, 30, 60))
    if kind == "slow":
        return target, rng.choice((256, 1024, 4096))
    return target, 0
