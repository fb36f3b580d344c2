"""The README's shell recipes run as written, so the README cannot drift from the code.

Every ```` ```sh ```` block of README.md is preceded by a marker comment
``<!-- readme-test: NAME -->``; ``skip (why)`` blocks are not run, the others run here in
document order, one test per recipe, in a fresh directory, with the README's own ports and
ids. Each command runs in ``bash -c`` exactly as written, with three things a person at an
interactive shell gets from the shell itself:

* ``export`` lines stay in effect for the commands after them;
* a command ending in ``&`` runs in the background (a *job*, numbered from 1); before the
  next foreground command the test waits until every job's ``--listen-http`` answers
  ``/healthz`` (a person waits for "ready" in the log);
* ``kill %N`` and ``wait %N`` act on job N (SIGTERM; wait for its exit status).

Every foreground command must exit 0, every job still running at the end is stopped with
SIGTERM and must exit 0 too. The ports are fixed (they are the README's), so the recipes
of concurrent test runs on one machine take turns through a lock file.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Final

import attrs
import httpx
import pytest
import trio

from safekeeper_recovery.testing import wait_until

README: Final = Path(__file__).resolve().parents[2] / "README.md"
MARKER: Final = re.compile(r"<!--\s*readme-test:\s*(\S+)(?:\s+.*)?-->")
JOB: Final = re.compile(r"%(\d+)")
COMMAND_TIMEOUT: Final = 120.0
READY_TIMEOUT: Final = 30.0
LOCK_TIMEOUT: Final = 300.0

pytestmark = pytest.mark.slow


@attrs.frozen
class Block:
    tag: str
    line: int
    commands: tuple[str, ...]


def readme_blocks(text: str) -> list[Block]:
    """Every ```sh block with its marker; continuation lines joined, comments dropped."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```sh":
            i += 1
            continue
        marker = MARKER.fullmatch(lines[i - 1].strip()) if i > 0 else None
        assert marker is not None, (
            f"README.md:{i + 1}: a ```sh block without a <!-- readme-test: NAME --> marker "
            "(or `skip (why)`) on the line before"
        )
        start = i + 1
        body: list[str] = []
        i += 1
        while lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        blocks.append(Block(marker.group(1), start, tuple(_commands(body))))
        i += 1
    return blocks


def _commands(body: list[str]) -> Iterator[str]:
    current = ""
    for raw in body:
        line = raw.rstrip()
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        current += line.strip()
        command = current.strip()
        current = ""
        if command and not command.startswith("#"):
            yield command


def recipe(tags: tuple[str, ...]) -> list[str]:
    commands = [c for b in readme_blocks(README.read_text()) if b.tag in tags
                for c in b.commands]
    assert commands, f"README.md has no block tagged {tags}"
    return commands


class Shell:
    """Runs README commands as an interactive bash would (see the module docstring)."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.exports: list[str] = []
        self.jobs: list[tuple[str, trio.Process]] = []
        self.ready: set[int] = set()
        self.outputs: list[tuple[str, str]] = []
        """``(command, stdout)`` of every foreground command, in order."""
        bin_dir = str(Path(sys.executable).parent)  # this venv's safekeeper-recovery
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEKEEPER_")}
        self.env["PATH"] = bin_dir + os.pathsep + self.env.get("PATH", "")

    def _script(self, command: str) -> list[str]:
        return ["bash", "-c", "".join(f"{e}; " for e in self.exports) + command]

    async def run(self, command: str) -> None:
        # Strip a trailing comment only where bash would (after whitespace, outside quotes).
        words = shlex.split(command, comments=True)
        if words and words[0] == "export":
            self.exports.append(command)
        elif command.endswith("&") and not command.endswith("&&"):
            await self._background(command[:-1].rstrip())
            return
        elif words and words[0] in ("kill", "wait"):
            await self._job_control(command)
            return
        await self._wait_jobs_ready()
        with trio.fail_after(COMMAND_TIMEOUT):
            done = await trio.run_process(
                self._script(command), cwd=self.cwd, env=self.env, check=False,
                capture_stdout=True, capture_stderr=True,
            )
        assert done.returncode == 0, (
            f"`{command}` exited {done.returncode}\nstdout:\n{done.stdout.decode()}\n"
            f"stderr:\n{done.stderr.decode()}\n{self._logs()}"
        )
        self.outputs.append((command, done.stdout.decode()))

    async def _background(self, command: str) -> None:
        out = self.cwd / f"job{len(self.jobs) + 1}.out"
        with out.open("wb") as f:
            # `exec`: the job's pid is the command's own, so kill %N signals it directly.
            process = await trio.lowlevel.open_process(
                self._script("exec " + command), cwd=self.cwd, env=self.env,
                stdout=f, stderr=f,
            )
        self.jobs.append((command, process))

    def _job(self, ref: str) -> tuple[int, str, trio.Process]:
        n = int(ref)
        assert 1 <= n <= len(self.jobs), f"no job %{n}"
        command, process = self.jobs[n - 1]
        return n, command, process

    async def _job_control(self, command: str) -> None:
        for part in command.split("#", 1)[0].split("&&"):
            words = part.split()
            assert words[0] in ("kill", "wait"), f"unsupported job control {part!r}"
            assert all(JOB.fullmatch(w) for w in words[1:]), f"not a job: {part!r}"
            for ref in words[1:]:
                n, job, process = self._job(ref[1:])
                if words[0] == "kill":
                    process.send_signal(signal.SIGTERM)
                    continue
                with trio.fail_after(COMMAND_TIMEOUT):
                    code = await process.wait()
                assert code == 0, f"job %{n} `{job}` exited {code}\n{self._logs()}"

    async def _wait_jobs_ready(self) -> None:
        for n, (command, process) in enumerate(self.jobs, start=1):
            if n in self.ready:
                continue
            match = re.search(r"--listen-http\s+(\S+)", command)
            assert match is not None, f"job %{n} has no --listen-http to wait for: {command}"
            url = f"http://{match.group(1)}/healthz"

            async def up(process: trio.Process = process, url: str = url, n: int = n) -> bool:
                assert process.poll() is None, f"job %{n} exited early\n{self._logs()}"
                try:
                    async with httpx.AsyncClient(timeout=2.0) as client:
                        return (await client.get(url)).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(up, READY_TIMEOUT, message=f"job %{n} to answer {url}")
            self.ready.add(n)

    async def stop_all(self) -> None:
        """SIGTERM every job still running; each must exit 0 (a graceful shutdown)."""
        for _, process in self.jobs:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for n, (command, process) in enumerate(self.jobs, start=1):
            with trio.fail_after(COMMAND_TIMEOUT):
                code = await process.wait()
            assert code == 0, f"job %{n} `{command}` exited {code} on SIGTERM\n{self._logs()}"

    def output_of(self, prefix: str) -> list[str]:
        found = [out for command, out in self.outputs if command.startswith(prefix)]
        assert found, f"no command starting with {prefix!r} ran"
        return found

    def kill_all(self) -> None:
        for _, process in self.jobs:
            if process.returncode is None:
                process.kill()

    def _logs(self) -> str:
        return "\n".join(f"--- {p.name}:\n{p.read_text()[-3000:]}"
                         for p in sorted(self.cwd.glob("*.log")))


@asynccontextmanager
async def readme_ports() -> AsyncIterator[None]:
    """Hold the machine-wide README lock (fixed ports), polling it with a deadline."""
    path = Path(tempfile.gettempdir()) / "safekeeper-recovery-readme-test.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:

        def take() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        await wait_until(take, LOCK_TIMEOUT, message=f"the README port lock {path}", poll=0.2)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def ports_free(commands: list[str]) -> Iterator[None]:
    """Fail clearly, before starting anything, if a README port is taken by someone else."""
    for port in sorted({int(p) for c in commands for p in re.findall(r"127\.0\.0\.1:(\d+)", c)}):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError as e:
                pytest.fail(f"README port {port} is in use on this machine: {e}")
    yield


async def run_recipe(tmp_path: Path, *tags: str) -> Shell:
    commands = recipe(tags)
    shell = Shell(tmp_path)
    async with readme_ports():
        with ports_free(commands):
            try:
                for command in commands:
                    await shell.run(command)
                await shell.stop_all()
            finally:
                shell.kill_all()
    return shell


def fence_languages(text: str) -> list[tuple[int, str]]:
    """``(line, language)`` of every opening code fence of a markdown text."""
    opened: list[tuple[int, str]] = []
    inside = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().startswith("```"):
            if not inside:
                opened.append((number, line.strip()[3:].strip()))
            inside = not inside
    return opened


def test_every_shell_block_is_tested_or_says_why_not() -> None:
    blocks = readme_blocks(README.read_text())
    tags = {b.tag for b in blocks}
    assert tags == {"skip", "cluster", "verify", "auth"}, tags
    # Only ```sh blocks are run: a recipe fenced otherwise would escape the test.
    for line, language in fence_languages(README.read_text()):
        assert language, f"README.md:{line}: a code block without a language"
        assert language not in {"bash", "shell", "console", "shell-session", "zsh"}, (
            f"README.md:{line}: shell commands are fenced ```sh, so this test runs them"
        )


async def test_readme_cluster_and_verify_recipes_run_as_written(tmp_path: Path) -> None:
    shell = await run_recipe(tmp_path, "cluster", "verify")
    [proposed] = shell.output_of("safekeeper-recovery propose")
    assert "wrote 16777216 bytes" in proposed
    online, offline = shell.output_of("safekeeper-recovery verify")
    assert " is valid: " in online
    assert " is valid: " in offline
    [synced] = shell.output_of("safekeeper-recovery sync")  # the commit LSN, on stdout
    assert re.fullmatch(r"[0-9A-F]+/[0-9A-F]+", synced.strip().splitlines()[-1]), synced


async def test_readme_auth_recipe_runs_as_written(tmp_path: Path) -> None:
    shell = await run_recipe(tmp_path, "auth")
    [proposed] = shell.output_of("safekeeper-recovery propose")
    assert "wrote 16777216 bytes" in proposed
    [verified] = shell.output_of("safekeeper-recovery verify")
    assert " is valid: " in verified
