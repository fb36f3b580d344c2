"""Importing the library changes no global state (issue 13, item 4; DESIGN.md §2).

Each facade is imported in a fresh interpreter that watches what the import could change:

* glibc's allocator: every lookup of a C function through ``ctypes`` is recorded, so a
  ``mallopt`` call (what :func:`safekeeper_recovery.tune_allocator` does, and only the CLI
  may do) shows up as a lookup of ``mallopt``;
* process-wide settings: signal handlers, the environment, logging's root logger, warning
  filters, hooks, limits, the recursion limit, gc thresholds, structlog's configuration;
* wsproto: the identity of every attribute of every wsproto module and class (the WAL
  port's fast path replaces some of them).

The ``test_probe_*`` tests show that each watch does see the change it is there for.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from typing import Final

import pytest

_CHILD: Final = r'''
import ctypes, faulthandler, gc, importlib, json, logging, os, resource, signal, socket
import sys, threading, warnings
import structlog, wsproto  # dependencies: imported first so their own import is not ours

lookups = []
_getitem = ctypes.CDLL.__getitem__
def _recording_getitem(self, name):  # CDLL.__getattr__ (libc.mallopt) comes through here
    lookups.append(str(name))
    return _getitem(self, name)
ctypes.CDLL.__getitem__ = _recording_getitem

def process_state():
    return {
        "signals": {int(s): repr(signal.getsignal(s)) for s in signal.valid_signals()},
        "environ": dict(os.environ),
        "logging": [logging.root.level, repr(logging.root.handlers),
                    logging.root.manager.disable, repr(logging.getLoggerClass())],
        "warnings": repr(warnings.filters),
        "hooks": [repr(h) for h in (sys.excepthook, threading.excepthook,
                                     sys.unraisablehook, sys.breakpointhook)],
        "import_system": [repr(sys.meta_path), repr(sys.path_hooks)],
        "limits": [resource.getrlimit(resource.RLIMIT_NOFILE), sys.getrecursionlimit(),
                   sys.getswitchinterval(), gc.get_threshold(), gc.isenabled(),
                   socket.getdefaulttimeout(), faulthandler.is_enabled()],
        "structlog": [structlog.is_configured(), repr(structlog.get_config())],
    }

def wsproto_state():
    state = {}
    for name, module in sorted(sys.modules.items()):
        if name != "wsproto" and not name.startswith("wsproto."):
            continue
        for attr, value in vars(module).items():
            state[f"{name}.{attr}"] = id(value)
            if isinstance(value, type) and value.__module__ == name:
                for member, inner in vars(value).items():
                    state[f"{name}.{attr}.{member}"] = id(inner)
    return state

state_before, wsproto_before = process_state(), wsproto_state()
importlib.import_module(sys.argv[1])
exec(sys.argv[2])  # the probe tests' deliberate change; empty otherwise
state_after, wsproto_after = process_state(), wsproto_state()
print(json.dumps({
    "ctypes_lookups": lookups,
    "state_changed": sorted(k for k in state_before if state_before[k] != state_after[k]),
    "wsproto_changed": sorted(k for k in wsproto_before
                              if wsproto_after.get(k) != wsproto_before[k]),
}))
'''

FACADES: Final = (
    "safekeeper_recovery",
    "safekeeper_recovery.core",
    "safekeeper_recovery.storage",
    "safekeeper_recovery.timeline",
    "safekeeper_recovery.recovery",
    "safekeeper_recovery.transport",
    "safekeeper_recovery.node",
    "safekeeper_recovery.sidecar",
    "safekeeper_recovery.proposer",
    "safekeeper_recovery.pgwal",
    "safekeeper_recovery.postgres",
    "safekeeper_recovery.sim",
    "safekeeper_recovery.demo",
    "safekeeper_recovery.bench",
    "safekeeper_recovery.cli",
    "safekeeper_recovery.testing",
    "safekeeper_recovery.faults",
)

@functools.cache
def _import_report(module: str, then: str = "") -> dict[str, list[str]]:
    """Import ``module`` (then run ``then``) in a fresh interpreter; what changed."""
    done = subprocess.run([sys.executable, "-c", _CHILD, module, then], check=False,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.parametrize("module", FACADES)
def test_import_does_not_tune_the_allocator(module: str) -> None:
    assert "mallopt" not in _import_report(module)["ctypes_lookups"]


@pytest.mark.parametrize("module", FACADES)
def test_import_changes_no_process_wide_setting(module: str) -> None:
    assert _import_report(module)["state_changed"] == []


# ---- wsproto: the fast path is the node's/CLI's opt-in, never an import side effect ----
@pytest.mark.parametrize("module", FACADES)
def test_import_leaves_wsproto_untouched(module: str) -> None:
    assert _import_report(module)["wsproto_changed"] == []


# ---- the watches see what they watch for ----
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_probe_sees_tune_allocator() -> None:
    report = _import_report("safekeeper_recovery",
                            "import safekeeper_recovery as s; assert s.tune_allocator()")
    assert "mallopt" in report["ctypes_lookups"]


def test_probe_sees_a_replaced_wsproto_internal() -> None:
    report = _import_report(
        "safekeeper_recovery.core",
        "import wsproto.frame_protocol as f; f.FrameProtocol._serialize_frame = print")
    assert report["wsproto_changed"] == ["wsproto.frame_protocol.FrameProtocol._serialize_frame"]


@pytest.mark.parametrize(("change", "key"), [
    ("signal.signal(signal.SIGUSR1, signal.SIG_IGN)", "signals"),
    ("os.environ['SAFEKEEPER_PROBE'] = '1'", "environ"),
    ("logging.basicConfig()", "logging"),
    ("warnings.simplefilter('ignore')", "warnings"),
    ("gc.set_threshold(1000, 10, 10)", "limits"),
    ("structlog.configure()", "structlog"),
])
def test_probe_sees_a_changed_setting(change: str, key: str) -> None:
    assert _import_report("safekeeper_recovery.core", change)["state_changed"] == [key]
