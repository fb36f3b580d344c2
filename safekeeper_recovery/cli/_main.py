"""Root command group; subcommands register themselves from their own modules."""

from __future__ import annotations

from typing import Any

import click

from .. import __version__
from .._allocator import tune_allocator
from ..core import SafekeeperError, leaves
from ..transport import enable_wsproto_fastpath


def _expected_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one expected failure (ours, the OS's, a usage error) inside trio's exception
    group, if every leaf is one; ``None`` for anything else (a bug: keep its traceback)."""
    inside = leaves(group)
    expected = (SafekeeperError, OSError, click.ClickException, KeyboardInterrupt)
    if inside and all(isinstance(e, expected) for e in inside):
        return inside[0]
    return None


class _Group(click.Group):
    """Every command's expected failure is one ``Error:`` line, also when it reaches us
    wrapped in trio's ``ExceptionGroup`` (a nursery inside the command raised it)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BaseExceptionGroup as group:
            leaf = _expected_leaf(group)
            if leaf is None:
                raise
            if isinstance(leaf, (click.ClickException, KeyboardInterrupt)):
                raise leaf from None
            raise click.ClickException(str(leaf)) from None


@click.group(cls=_Group,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="safekeeper-recovery")
def main() -> None:
    """A trio-based PostgreSQL WAL safekeeper whose centrepiece is peer recovery.

    Run `safekeeper-recovery demo` to see a three-node cluster recover a lagging node.
    Codes such as R7 or S1 in error messages are explained in docs/errors.md.
    """
    tune_allocator()  # every command streams WAL in large, short-lived buffers
    # wsproto's pure-Python masking and framing were the ingest bottleneck (both sides).
    enable_wsproto_fastpath()
