"""Rules U1-U3 of the disk guard (``core/_disk_guard.py``), without I/O."""

from __future__ import annotations

import pytest

from safekeeper_recovery.core import DiskLimit, guard_refuses, resume_margin

GiB = 1 << 30


def test_u1_a_limit_is_bytes_or_a_percentage_of_the_file_system() -> None:
    assert DiskLimit(percent=95).limit_bytes(100 * GiB) == 95 * GiB
    assert DiskLimit(max_bytes=10 * GiB).limit_bytes(100 * GiB) == 10 * GiB
    assert str(DiskLimit(percent=95)) == "95%"
    for bad in ({}, {"max_bytes": 1, "percent": 5.0}, {"max_bytes": 0}, {"percent": 0.0},
                {"percent": 101.0}, {"percent": float("nan")}):
        with pytest.raises(ValueError, match="disk limit"):
            DiskLimit(**bad)


def test_u2_appends_are_refused_only_past_the_limit() -> None:
    limit = DiskLimit(percent=50)
    assert not guard_refuses(50 * GiB, 100 * GiB, limit, refusing=False)
    assert guard_refuses(50 * GiB + 1, 100 * GiB, limit, refusing=False)


def test_u3_appends_resume_only_below_the_limit_minus_a_margin() -> None:
    limit, size = DiskLimit(percent=50), 100 * GiB
    margin = resume_margin(size)
    assert margin == 64 << 20  # 1 % of 100 GiB is more than the 64 MiB cap
    assert guard_refuses(50 * GiB, size, limit, refusing=True)
    assert guard_refuses(50 * GiB - margin + 1, size, limit, refusing=True)
    assert not guard_refuses(50 * GiB - margin, size, limit, refusing=True)
    assert resume_margin(24 << 20) == (24 << 20) // 100  # a small disk: 1 %
