"""The public surface of ``safekeeper_recovery.storage``."""

from __future__ import annotations

import safekeeper_recovery.storage as storage


def test_all_is_sorted_and_every_name_exists() -> None:
    assert list(storage.__all__) == sorted(storage.__all__)
    for name in storage.__all__:
        assert hasattr(storage, name), name


def test_storage_imports_no_upper_layer() -> None:
    for module in ("timeline", "transport", "recovery", "node", "cli", "proposer"):
        for name in vars(storage):
            value = getattr(storage, name)
            assert f"safekeeper_recovery.{module}" not in getattr(value, "__module__", "")
