"""A run's report: ``report.md`` (the verdict, the faults, the figures) next to
``timeline.png`` (faults as bands; each node's flush and the commit LSN over time), and
``samples.json`` (the raw observations). The picture needs matplotlib (the ``faults``
dependency group); without it the markdown says so and nothing else changes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from ..testing import MiB
from ._campaign import RunResult

__all__ = ["replay_command", "write_report"]

_COLOURS: Final = {
    "partition": "tab:red", "one_way": "tab:orange", "loss": "tab:purple",
    "slow": "tab:olive", "pause": "tab:cyan", "kill": "tab:gray",
    "proposer_restart": "tab:pink",
}


def replay_command(result: RunResult, extra: str = "") -> str:
    s = result.schedule
    return (f"nox -s faults -- --runs 1 --seed {s.seed} --nodes {s.nodes} "
            f"--duration {s.duration:g}{extra}")


def write_report(result: RunResult, extra_args: str = "") -> Path:
    """Write the three files into ``result.out_dir``; returns the markdown's path."""
    out = result.out_dir
    (out / "samples.json").write_text(json.dumps({
        "samples": [[s.t, s.node, s.flush, s.commit, s.term] for s in result.samples],
        "faults": [[b.fault.kind, str(b.fault), b.start, b.end] for b in result.bands],
    }))
    picture = _plot(result, out / "timeline.png")
    s = result.schedule
    lines = [
        f"# Fault run: seed {s.seed}, {s.nodes} nodes, {s.duration:g} s",
        "",
        f"**{'clean' if result.ok else 'FAILED'}**" + ("" if result.ok else
            f" (replay: `{replay_command(result, extra_args)}`)"),
        "",
        *[f"- {v}" for v in result.violations],
        "",
        f"- committed and checked: {result.committed_bytes / MiB:.2f} MiB "
        f"({result.workload_bytes / MiB:.2f} MiB while the faults ran)",
        "- converged after healing: " + (
            "no" if result.converged_after is None else f"{result.converged_after:.2f} s"),
        f"- proposer runs: {len(result.runs)} "
        f"({sum(r.rc == 0 for r in result.runs)} completed)",
        f"- faults: {dict(sorted(s.counts().items()))}",
        "",
        f"![timeline]({picture.name})" if picture else
        "(no picture: install the `faults` dependency group for matplotlib)",
        "",
        "## Faults",
        "",
        *[f"    {b.fault}" for b in result.bands],
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _plot(result: RunResult, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(12, 5))
    seen: set[str] = set()
    for band in result.bands:
        kind = band.fault.kind
        ax.axvspan(band.start, max(band.end, band.start + 0.2), alpha=0.2,
                   color=_COLOURS[kind], label=None if kind in seen else kind)
        seen.add(kind)
    base = min((s.flush for s in result.samples), default=0)
    for node in range(1, result.schedule.nodes + 1):
        pts = [(s.t, (s.flush - base) / MiB) for s in result.samples if s.node == node]
        if pts:
            ax.plot(*zip(*pts, strict=True), lw=1, label=f"n{node} flush")
    commit: list[tuple[float, float]] = []
    for s in sorted(result.samples, key=lambda s: s.t):
        value = (s.commit - base) / MiB
        commit.append((s.t, max(value, commit[-1][1]) if commit else value))
    if commit:
        ax.plot(*zip(*commit, strict=True), "k--", lw=1.5, label="commit (max seen)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MiB past the first sample")
    verdict = "clean" if result.ok else "FAILED"
    ax.set_title(f"seed {result.schedule.seed}: {verdict}")
    ax.legend(loc="upper left", fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
