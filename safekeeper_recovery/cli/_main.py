"""Root command group; subcommands register themselves from their own modules."""

from __future__ import annotations

import click

from .. import __version__
from .._allocator import tune_allocator


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="safekeeper-recovery")
def main() -> None:
    """A trio-based PostgreSQL WAL safekeeper whose centrepiece is peer recovery.

    Run `safekeeper-recovery demo` to see a three-node cluster recover a lagging node.
    Codes such as R7 or S1 in error messages are explained in docs/errors.md.
    """
    tune_allocator()  # every command streams WAL in large, short-lived buffers
