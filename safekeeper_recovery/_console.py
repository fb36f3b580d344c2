"""The rich consoles every command prints through, and the one unit style.

Units: sizes and rates are binary (IEC) everywhere, ``KiB``/``MiB``/``GiB`` and ``MiB/s``,
as WAL sizes are powers of two. Output that is not a terminal (a pipe, a file, a CI log) is
never hard-wrapped: a line stays one line, so an id is never split across two.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from rich.console import Console
from rich.progress import ProgressColumn, Task
from rich.text import Text

__all__ = ["BinaryRateColumn", "format_bytes", "make_console", "quieted"]

_UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB")
_UNWRAPPED_WIDTH: Final = 10_000


def make_console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that wraps only on a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=_UNWRAPPED_WIDTH, soft_wrap=True)


@contextmanager
def quieted(logger_name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise ``logger_name``'s level for the duration of a command, then restore it.

    A command run in-process (a test's CliRunner, a library caller) must not leave a
    process-wide logger muted behind it."""
    logger = logging.getLogger(logger_name)
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


def format_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB`` (binary units; whole bytes below 1 KiB)."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


class BinaryRateColumn(ProgressColumn):
    """Transfer speed in MiB/s (rich's own column uses decimal MB/s)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("?", style="progress.data.speed")
        return Text(f"{format_bytes(speed)}/s", style="progress.data.speed")
