"""Scenario 9: ``safekeeper-recovery demo --bytes 64MiB`` works from a fresh virtualenv.

The venv is a plain one (no system site-packages) with the repository installed into it,
so the demo runs only on declared dependencies. ``uv`` is used when present (its cache
makes this take seconds); otherwise ``python -m venv`` + ``pip install``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import trio

REPO = Path(__file__).resolve().parents[2]


def _clean_env() -> dict[str, str]:
    # Nothing from this interpreter's environment may leak into the venv's imports.
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    return {k: v for k, v in os.environ.items()
            if k not in drop and not k.startswith("SAFEKEEPER_")}


async def _run(args: list[str], cwd: Path, timeout: float) -> tuple[int, str]:
    with trio.fail_after(timeout):
        done = await trio.run_process(args, cwd=cwd, env=_clean_env(), check=False,
                                      capture_stdout=True, capture_stderr=True)
    return done.returncode, done.stdout.decode() + done.stderr.decode()


async def _make_venv(venv: Path, cwd: Path) -> None:
    uv = shutil.which("uv")
    if uv is not None:
        code, out = await _run([uv, "venv", "-q", "--python", sys.executable, str(venv)],
                               cwd, 60)
        assert code == 0, out
        # --refresh-package: rebuild from the working tree, not a cached wheel of the repo.
        code, out = await _run(
            [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
             "--refresh-package", "safekeeper-recovery", str(REPO)], cwd, 240)
        assert code == 0, out
        return
    code, out = await _run([sys.executable, "-m", "venv", str(venv)], cwd, 60)
    assert code == 0, out
    code, out = await _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                            str(REPO)], cwd, 300)
    assert code == 0, out


@pytest.mark.slow
async def test_demo_exits_zero_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    await _make_venv(venv, tmp_path)
    # The package the venv imports is its own installed copy, not the checkout.
    code, out = await _run(
        [str(venv / "bin" / "python"), "-c",
         "import pathlib, sys, safekeeper_recovery as m;"
         "print(pathlib.Path(m.__file__).resolve().is_relative_to("
         "pathlib.Path(sys.prefix).resolve()), sys.prefix != sys.base_prefix)"],
        tmp_path, 30)
    assert code == 0, out
    assert out.split() == ["True", "True"], out

    code, out = await _run([str(venv / "bin" / "safekeeper-recovery"), "demo",
                            "--bytes", "64MiB"], tmp_path, 180)
    assert code == 0, out
    assert "all three match" in out, out
    # The attempt's own time (node 3's clock) is reported next to the time from spawning.
    # Not a terminal: nothing is hard-wrapped, so each message is on one line.
    [recovered] = [line for line in out.splitlines() if line.startswith("recovered ")]
    assert "streamed in" in recovered, out
    assert "after node 3 was started" in recovered, out
    assert "MiB/s" in recovered, out
    assert "MB/s" not in recovered, out
    [removed] = [line for line in out.splitlines() if line.startswith("Removed ")]
    assert "`safekeeper-recovery demo --keep`" in removed, out
    assert "`verify`" in removed, out
    assert "`timeline status`" in removed, out


@pytest.mark.slow
async def test_demo_keep_keeps_its_directory_and_shows_next_steps(tmp_path: Path) -> None:
    code, out = await _run([sys.executable, "-m", "safekeeper_recovery", "demo", "--bytes",
                            "4MiB", "--keep"], tmp_path, 180)
    assert code == 0, out
    [kept] = [line for line in out.splitlines() if line.startswith("Kept ")]
    root = Path(kept.split(" under ", 1)[1].split(" (", 1)[0])
    try:
        assert (root / "sk3" / "data").is_dir()
        steps = [line.strip() for line in out.splitlines() if line.startswith("  safekeeper")]
        assert steps[0].startswith(f"safekeeper-recovery verify --data-dir {root}/sk3/data ")
        # The first step works as printed: node 3 holds the WAL it recovered, valid.
        verify = await _run([sys.executable, "-m", "safekeeper_recovery",
                             *steps[0].split()[1:]], tmp_path, 60)
        assert verify[0] == 0, verify[1]
        assert " is valid: " in verify[1]
    finally:
        shutil.rmtree(root, ignore_errors=True)
