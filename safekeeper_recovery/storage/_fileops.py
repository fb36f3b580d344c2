"""The storage layer's one door to the file system, and the seam for disk-fault injection.

Every call in ``storage`` that opens, writes, reads, syncs, preallocates, truncates,
renames or removes a file goes through an attribute of this module
(``fileops.pwrite(fd, data, offset)``). In production those attributes *are* the ``os``
functions: the whole cost of the seam is one module attribute lookup per call.

:class:`DiskFaults` swaps them, for tests and fault drills, for wrappers that fail chosen
calls with ``OSError(ENOSPC)``, ``OSError(EIO)``, … — "the 3rd ``fdatasync`` under this
directory fails", "every ``pwrite`` from now on fails with a disk-full error". The stores
above turn such an ``OSError`` into a ``StorageError`` naming what they were doing, and the
timeline stops taking writes (docs/architecture.md "Disk faults").
"""

from __future__ import annotations

import errno as errno_module
import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final, final

import attrs

__all__ = [
    "OPERATIONS",
    "DiskFaults",
    "fdatasync",
    "fsync",
    "ftruncate",
    "open",
    "posix_fallocate",
    "pread",
    "preadv",
    "pwrite",
    "pwritev",
    "rename",
    "replace",
    "unlink",
]

open = os.open  # mirrors the os name on purpose: fileops.open(path, flags)
pwrite = os.pwrite
pwritev = os.pwritev
pread = os.pread
preadv = os.preadv
fsync = os.fsync
fdatasync = os.fdatasync
posix_fallocate = os.posix_fallocate
ftruncate = os.ftruncate
rename = os.rename
replace = os.replace
unlink = os.unlink

OPERATIONS: Final[dict[str, tuple[str, ...]]] = {
    "open": ("open",),
    "write": ("pwrite", "pwritev"),
    "read": ("pread", "preadv"),
    "fsync": ("fsync",),
    "fdatasync": ("fdatasync",),
    "fallocate": ("posix_fallocate",),
    "truncate": ("ftruncate",),
    "rename": ("rename", "replace"),
    "unlink": ("unlink",),
}
"""Operation names :meth:`DiskFaults.fail` accepts, and the attributes each one covers."""

_FD_FIRST: Final = frozenset({"pwrite", "pwritev", "pread", "preadv", "fsync", "fdatasync",
                              "posix_fallocate", "ftruncate"})


@attrs.define
class _Rule:
    op: str
    errno: int
    after: int
    times: int | None
    under: Path | None
    torn: bool
    matched: int = 0
    raised: int = 0


@final
class DiskFaults:
    """Fail chosen storage file operations with ``OSError`` while installed.

    Use as a context manager (or :meth:`install` / :meth:`uninstall`)::

        with DiskFaults() as faults:
            faults.fail("fdatasync", errno.EIO, after=2, under=timeline_dir)
            ...                      # the 3rd fdatasync under timeline_dir raises EIO

    A call matches a rule when its operation is the rule's and, if ``under`` is given, the
    file it acts on (resolved through ``/proc/self/fd`` for descriptor calls) lies under
    ``under``. Matching calls are numbered from 1; calls ``after + 1`` to ``after + times``
    raise (``times=None``: every one from then on, like a full disk). The first matching
    rule wins. ``torn=True`` on ``write`` really writes the first half of the buffer before
    raising (a short write, then the error). :attr:`calls` counts intercepted calls by
    operation; :meth:`raised` says how many failures a rule produced.

    Thread-safe: store calls run on worker threads. One instance may be installed at a
    time; uninstalling restores the real ``os`` functions.
    """

    def __init__(self) -> None:
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._saved: dict[str, Callable[..., Any]] = {}
        self.calls: Counter[str] = Counter()

    def fail(
        self,
        op: str,
        error: int = errno_module.EIO,
        *,
        after: int = 0,
        times: int | None = 1,
        under: Path | None = None,
        torn: bool = False,
    ) -> DiskFaults:
        """Add a rule (see the class docstring); returns ``self`` for chaining.

        Raises ``ValueError`` for an unknown ``op``, a negative ``after``, ``times < 1`` or
        ``torn`` on anything but ``write``.
        """
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}: expected one of {', '.join(OPERATIONS)}")
        if after < 0 or (times is not None and times < 1):
            raise ValueError("after must be >= 0 and times >= 1 (or None)")
        if torn and op != "write":
            raise ValueError("torn applies to write only")
        resolved = under.resolve() if under is not None else None
        with self._lock:
            self._rules.append(_Rule(op, error, after, times, resolved, torn))
        return self

    def clear(self) -> None:
        """Drop every rule: from now on every call succeeds (the wrappers stay installed)."""
        with self._lock:
            self._rules.clear()

    def raised(self, op: str | None = None) -> int:
        """How many injected failures were raised (for ``op`` only, if given)."""
        with self._lock:
            return sum(r.raised for r in self._rules if op is None or r.op == op)

    def install(self) -> None:
        """Replace this module's functions with failing wrappers."""
        module = globals()
        if self._saved:
            raise RuntimeError("DiskFaults is already installed")
        if getattr(module["pwrite"], "_disk_faults", None) is not None:
            raise RuntimeError("another DiskFaults is installed")
        for op, names in OPERATIONS.items():
            for name in names:
                self._saved[name] = module[name]
                module[name] = self._wrap(op, name, module[name])

    def uninstall(self) -> None:
        """Put the real functions back. Idempotent."""
        module = globals()
        for name, fn in self._saved.items():
            module[name] = fn
        self._saved.clear()

    def __enter__(self) -> DiskFaults:
        self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()

    def _wrap(self, op: str, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            rule = self._match(op, name, args[0])
            if rule is not None:
                if rule.torn and args[1]:
                    # pwritev takes a list of buffers: tear it inside the first one.
                    data = memoryview(args[1][0] if name == "pwritev" else args[1])
                    torn = data[: max(1, len(data) // 2)]
                    real(args[0], [torn] if name == "pwritev" else torn, *args[2:])
                raise OSError(rule.errno, f"{os.strerror(rule.errno)} (injected {op} fault)")
            return real(*args, **kwargs)

        wrapper._disk_faults = self  # type: ignore[attr-defined]  # marks an installed seam
        wrapper.__name__ = name
        return wrapper

    def _match(self, op: str, name: str, target: object) -> _Rule | None:
        with self._lock:
            self.calls[op] += 1
            rules = [r for r in self._rules if r.op == op]
        if not rules:
            return None
        path = _target_path(name, target) if any(r.under for r in rules) else None
        chosen: _Rule | None = None
        with self._lock:
            for rule in rules:
                if rule.under is not None and (path is None or not path.is_relative_to(rule.under)):
                    continue
                rule.matched += 1
                due = rule.matched > rule.after and (
                    rule.times is None or rule.matched <= rule.after + rule.times
                )
                if due and chosen is None:
                    rule.raised += 1
                    chosen = rule
        return chosen

    def __repr__(self) -> str:
        return f"DiskFaults(rules={len(self._rules)}, installed={bool(self._saved)})"


def _target_path(name: str, target: object) -> Path | None:
    """The file a call acts on: a path argument, or what a descriptor refers to."""
    try:
        if name in _FD_FIRST and isinstance(target, int):
            return Path(os.readlink(f"/proc/self/fd/{target}"))
        if isinstance(target, str | os.PathLike):
            return Path(os.path.abspath(os.fspath(target))).resolve()
    except OSError:
        pass
    return None
