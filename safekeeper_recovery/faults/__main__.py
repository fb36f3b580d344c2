"""``python -m safekeeper_recovery.faults --runs N --seed S``."""

from ._cli import main

raise SystemExit(main())
