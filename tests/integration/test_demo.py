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
    flat = " ".join(out.split())  # rich wraps lines at the terminal width
    assert "streamed in" in flat, out
    assert "after node 3 was started" in flat, out
