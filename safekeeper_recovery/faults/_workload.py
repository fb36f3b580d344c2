"""The workload: ``propose --rate`` runs one after another, in the proposer's namespace.

Each run writes ``run_bytes`` of the seed's WAL at ``rate`` bytes/s; when it ends (done,
lost its quorum, killed by the nemesis) the next starts after ``RESTART_DELAY``, as a
restarted compute would. Every run's output goes to ``proposer/run-K.{out,err}`` and its
summary line, if it printed one, is parsed into a :class:`ProposerRun`.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final, final

import attrs
import trio

from ..core import Lsn

__all__ = ["ProposerRun", "Workload", "parse_summary", "python_cli"]

RESTART_DELAY: Final = 0.2
"""Seconds between one run's end and the next one's start (a back-off, not a wait for a
condition: a refused run is simply tried again)."""

_SUMMARY = re.compile(
    r"term (?P<term>\d+): wrote (?P<bytes>\d+) bytes (?P<start>\S+)\.\.(?P<end>\S+) in .*"
    r"commit_lsn (?P<commit>[0-9A-Fa-f]+/[0-9A-Fa-f]+);"
)


@final
@attrs.frozen
class ProposerRun:
    index: int
    rc: int
    started: float
    ended: float
    term: int | None = None
    start_lsn: Lsn | None = None
    commit_lsn: Lsn | None = None
    tracebacks: int = 0


def parse_summary(line: str) -> tuple[int, Lsn, Lsn] | None:
    """``(term, term start LSN, commit_lsn)`` from ``propose``'s summary line, or None."""
    m = _SUMMARY.search(line)
    if m is None:
        return None
    return int(m["term"]), Lsn.parse(m["start"]), Lsn.parse(m["commit"])


class Workload:
    """Proposer runs in a loop until cancelled; :meth:`kill` SIGKILLs the running one."""

    def __init__(self, argv: Callable[[int], list[str]], log_dir: Path,
                 clock: Callable[[], float]) -> None:
        self._argv = argv
        self._log_dir = log_dir
        self._clock = clock
        self._process: trio.Process | None = None
        self.runs: list[ProposerRun] = []

    def kill(self) -> bool:
        """SIGKILL the running proposer; False if none was running."""
        if self._process is None or self._process.returncode is not None:
            return False
        self._process.send_signal(signal.SIGKILL)
        return True

    async def serve(self) -> None:
        """Run proposers back to back. Never returns unless cancelled (the running one is
        then killed and reaped)."""
        while True:
            await self.run_once()
            await trio.sleep(RESTART_DELAY)

    async def run_once(self, argv: list[str] | None = None) -> ProposerRun:
        """One run to its end (``argv`` overrides the loop's); recorded in :attr:`runs`."""
        index = len(self.runs)
        self._log_dir.mkdir(parents=True, exist_ok=True)
        out_path = self._log_dir / f"run-{index}.out"
        err_path = self._log_dir / f"run-{index}.err"
        started = self._clock()
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = await trio.lowlevel.open_process(
                argv or self._argv(index), stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )
        self._process = proc
        try:
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()
            self._process = None
            # Recorded even when cancelled: the run's files stay its own.
            run = self._record(index, proc.returncode, started, out_path, err_path)
        return run

    def _record(self, index: int, rc: int | None, started: float, out_path: Path,
                err_path: Path) -> ProposerRun:
        parsed = parse_summary(out_path.read_text(errors="replace"))
        term, start, commit = parsed if parsed else (None, None, None)
        run = ProposerRun(index, -1 if rc is None else rc, started, self._clock(), term, start,
                          commit, err_path.read_text(errors="replace").count("Traceback"))
        self.runs.append(run)
        return run

def python_cli() -> list[str]:
    return [sys.executable, "-m", "safekeeper_recovery"]
