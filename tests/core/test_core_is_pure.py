"""The core is sans-IO: no trio, no clock, no randomness, no disk (STYLE.md 1, DESIGN.md 2)."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

import safekeeper_recovery.core

CORE_DIR = pathlib.Path(safekeeper_recovery.core.__file__).parent
PACKAGE_DIR = CORE_DIR.parent

FORBIDDEN_MODULES = frozenset(
    {
        # the ones the design names
        "trio", "time", "os", "random", "pathlib", "socket",
        # and their relatives: other clocks, randomness, I/O, concurrency, upper-layer libs
        "asyncio", "datetime", "hypercorn", "httpx", "io", "secrets", "selectors", "shutil",
        "starlette", "subprocess", "tempfile", "threading", "trio_websocket", "uuid",
    }
)  # fmt: skip

# Runs in a fresh interpreter: trio & co. cannot be imported, and opening files or reading a
# clock raises, while the core is imported and an acceptor step is taken. The parent package
# is stubbed so that only the core's own imports count (the facade may grow upper layers).
PURE_RUN = textwrap.dedent(
    """
    import builtins, io, os, sys, time, types

    for name in ("trio", "trio_websocket", "httpx", "hypercorn", "starlette"):
        sys.modules[name] = None  # any import of it raises ImportError

    # The core's allowed third-party dependencies load first: crc32c reads its own package
    # metadata from disk at import, which is not the core's doing.
    import attrs, crc32c

    parent = types.ModuleType("safekeeper_recovery")
    parent.__path__ = [sys.argv[1]]
    sys.modules["safekeeper_recovery"] = parent

    calls = []

    def forbidden(name):
        def fail(*args, **kwargs):
            calls.append(name)
            raise RuntimeError(f"the core called {name}")
        return fail

    patched = {
        (builtins, "open"), (io, "open"), (os, "open"), (os, "urandom"),
        (time, "time"), (time, "time_ns"), (time, "monotonic"), (time, "monotonic_ns"),
        (time, "perf_counter"),
    }
    saved = {(mod, attr): getattr(mod, attr) for mod, attr in patched}
    for mod, attr in patched:
        setattr(mod, attr, forbidden(f"{mod.__name__}.{attr}"))
    try:
        from safekeeper_recovery import core
        from safekeeper_recovery.core import (
            Acceptor, AppendRequest, Lsn, NodeId, PersistentState, ProposerElected,
            ServerInfo, TenantId, TermHistory, TimelineId, VoteRequest, decode_proposer_message,
            decode_state, encode, encode_state, select_donors,
        )

        start = Lsn(0x1000)
        state = PersistentState.new_timeline(
            TenantId(bytes(16)), TimelineId(bytes(16)), start, ServerInfo()
        )
        acc = Acceptor(NodeId(1), state, write_lsn=start, flush_lsn=start)
        vote = acc.handle(decode_proposer_message(encode(VoteRequest(1))))
        assert vote.reply.vote_given, vote
        acc.handle(ProposerElected(1, start, TermHistory.of((0, start), (1, start))))
        step = acc.handle(AppendRequest(1, start, Lsn(0), Lsn(0), b"wal"))
        assert step.reply.flush_lsn == start + 3, step
        assert decode_state(encode_state(acc.persisted)) == acc.persisted
        sel = select_donors(
            my_node_id=NodeId(1), my_term=1, my_last_log_term=1, my_flush_lsn=start, peers=(),
            connected_proposers=0, now=0.0, heartbeat_timeout=5.0,
        )
        assert sel.why_no_donor == "no alive peers"
    finally:
        for (mod, attr), value in saved.items():
            setattr(mod, attr, value)
    assert not calls, calls
    loaded = sorted(
        n for n in ("trio", "trio_websocket", "httpx", "hypercorn", "starlette")
        if sys.modules.get(n) is not None
    )
    assert not loaded, loaded
    print("pure core ok")
    """
)


def test_core_imports_and_steps_with_trio_unimportable_and_no_clock_or_files() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PURE_RUN, str(PACKAGE_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pure core ok"


def test_the_purity_harness_does_catch_a_clock_read() -> None:
    """The subprocess check is not vacuous: a clock read during the run is reported."""
    tampered = PURE_RUN.replace(
        "    acc = Acceptor(", "    time.monotonic()\n    acc = Acceptor(", 1
    )
    assert tampered != PURE_RUN
    result = subprocess.run(
        [sys.executable, "-c", tampered, str(PACKAGE_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "the core called time.monotonic" in result.stderr


def _imports(path: pathlib.Path) -> list[tuple[str, int]]:
    """(module, relative level) for every import statement in ``path``."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def test_core_modules_import_no_io_clock_randomness_or_trio() -> None:
    modules = sorted(CORE_DIR.glob("*.py"))
    assert len(modules) >= 10
    offenders = [
        f"{path.name}: import {name}"
        for path in modules
        for name, level in _imports(path)
        if level == 0 and name.split(".")[0] in FORBIDDEN_MODULES
    ]
    assert offenders == []


def test_core_modules_never_import_upper_layers() -> None:
    offenders = [
        f"{path.name}: from {'.' * level}{name}"
        for path in sorted(CORE_DIR.glob("*.py"))
        for name, level in _imports(path)
        if level > 1 or (level == 0 and name.startswith("safekeeper_recovery"))
    ]
    assert offenders == []


def test_the_static_check_recognises_forbidden_imports(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os.path\nfrom time import monotonic\nfrom ..storage import x\n")
    assert _imports(sample) == [("os.path", 0), ("time", 0), ("storage", 2)]
