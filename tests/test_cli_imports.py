"""What loading the command line costs every command, ``serve`` included."""

from __future__ import annotations

import subprocess
import sys


def test_loading_the_command_line_does_not_import_psycopg() -> None:
    # psycopg (about 0.15 s) is only needed by ``propose --from-postgres``; a restarted node
    # should not wait for it before it serves and recovers.
    code = (
        "import sys, safekeeper_recovery.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'psycopg'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout
