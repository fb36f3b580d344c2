"""``python -m safekeeper_recovery.sim --seeds N [--first-seed S] [--bug NAME]``."""

from ._cli import main

raise SystemExit(main())
