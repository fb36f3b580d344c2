"""Running ``python -m safekeeper_recovery …`` commands as child processes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Final

import attrs
import trio

__all__ = ["CLI", "BackgroundCli", "ProcessResult", "run_cli", "start_cli"]

CLI: Final = (sys.executable, "-m", "safekeeper_recovery")
"""The command line of this interpreter's ``safekeeper-recovery``."""


@attrs.frozen
class ProcessResult:
    """A finished command: exit code and decoded output."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, object]:
        """The last stdout line that is a JSON object (commands print JSON summaries), else
        the whole of stdout as one JSON object; ``ValueError`` if there is none."""
        for line in reversed(self.stdout.strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                value = json.loads(line)
                if not isinstance(value, dict):
                    raise ValueError(f"not a JSON object: {line}")
                return value
        try:
            whole = json.loads(self.stdout)
        except ValueError:
            raise ValueError(f"no JSON object in stdout:\n{self.stdout}") from None
        if not isinstance(whole, dict):
            raise ValueError(f"not a JSON object:\n{self.stdout}")
        return whole


async def run_cli(*args: str, timeout: float = 60.0, env: dict[str, str] | None = None
                  ) -> ProcessResult:
    """Run ``python -m safekeeper_recovery ARGS`` to completion; ``trio.TooSlowError``
    after ``timeout`` seconds (the child is killed)."""
    with trio.fail_after(timeout):
        done = await trio.run_process(
            [*CLI, *args], capture_stdout=True, capture_stderr=True, check=False,
            env={**os.environ, **(env or {})},
        )
    return ProcessResult(done.returncode, done.stdout.decode(), done.stderr.decode())


class BackgroundCli:
    """A command running in the background; its output goes to files (no pipe stalls)."""

    def __init__(self, process: trio.Process, out: Path, err: Path) -> None:
        self.process = process
        self._out = out
        self._err = err

    async def wait(self, timeout: float = 120.0) -> ProcessResult:
        """Wait for the exit (``trio.TooSlowError`` after ``timeout``); its result."""
        with trio.fail_after(timeout):
            code = await self.process.wait()
        return ProcessResult(code, self._out.read_text(), self._err.read_text())

    def stderr(self) -> str:
        return self._err.read_text()

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


async def start_cli(work_dir: Path, name: str, *args: str) -> BackgroundCli:
    """Start ``python -m safekeeper_recovery ARGS``; output to ``work_dir/name.std{out,err}``."""
    out, err = work_dir / f"{name}.stdout", work_dir / f"{name}.stderr"
    with out.open("wb") as fout, err.open("wb") as ferr:
        process = await trio.lowlevel.open_process([*CLI, *args], stdout=fout, stderr=ferr)
    return BackgroundCli(process, out, err)
