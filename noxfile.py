"""Developer and CI sessions: ``nox -s tests lint typecheck`` (the README's check command)."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|venv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = False

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _install(session: nox.Session, *groups: str) -> None:
    deps: list[str] = []
    for group in groups:
        deps.extend(nox.project.dependency_groups(PYPROJECT, group))
    session.install("-e", ".", *deps)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite with a line-coverage report; the pure core must stay ≥ 95 %.

    Two workers (pytest-xdist), one test file at a time each: most tests wait on real node
    processes, PostgreSQL or the network, so two halve the wall time on a 2-core machine;
    a file's tests stay on one worker (module fixtures, the README's fixed ports), and the
    test launcher gives each worker its own ports (``testing.PortAllocator``).
    ``nox -s tests -- -n 0`` runs them in one process.

    Bytecode caching is switched back on for the run: a machine whose environment sets
    ``PYTHONDONTWRITEBYTECODE`` (common in containers) otherwise compiles the package and its
    dependencies afresh in every node and CLI process the tests start, about 0.6 s of CPU
    each, which was half of the suite's time on a 2-core machine (an empty value means
    unset to Python)."""
    session.env["PYTHONDONTWRITEBYTECODE"] = ""
    _install(session, "test")
    session.run(
        "pytest",
        "--numprocesses=2",
        "--dist=loadfile",
        "--cov=safekeeper_recovery",
        "--cov-report=term",
        *session.posargs,
    )
    session.run(
        "coverage", "report", "--include=safekeeper_recovery/core/*", "--fail-under=95"
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check: pyflakes, pycodestyle, bugbear, ASYNC and the rest of pyproject's rules."""
    _install(session, "lint")
    session.run("ruff", "check", "safekeeper_recovery", "tests", "examples", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package and the tests."""
    _install(session, "typecheck")
    session.run("mypy", "--strict")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (minutes; needs PostgreSQL's binaries): prints a table and writes
    docs/benchmarks.md. ``nox -s bench -- --quick`` for the short run (prints only, unless
    ``--output FILE``)."""
    session.install("-e", ".")
    session.run("safekeeper-recovery", "bench", *session.posargs)


@nox.session
def simulate(session: nox.Session) -> None:
    """The deterministic cluster simulation over a seed range, stopping at the first failure
    with its replay command: ``nox -s simulate -- --seeds N [--first-seed S] [--jobs J]
    [--nodes 3|5] [--bug NAME] [-v]`` (default: 200 seeds)."""
    _install(session)
    args = session.posargs or ["--seeds", "200"]
    session.run("python", "-m", "safekeeper_recovery.sim", *args)


@nox.session
def faults(session: nox.Session) -> None:
    """The real-network fault campaign (needs root, ip, nft and tc; docs/faults.md):
    ``nox -s faults -- --runs N --seed S [--nodes 3|5] [--duration SECONDS] [--kinds K,…]
    [--wal-format random|pg]``, one seeded schedule per run, stopping at the first failure
    with its replay command; each run's logs, report.md and timeline.png go to
    faults-out/seed-S/ (default: 10 runs of 60 s)."""
    _install(session, "faults")
    args = session.posargs or ["--runs", "10"]
    session.run("python", "-m", "safekeeper_recovery.faults", *args)
