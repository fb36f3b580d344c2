"""Test identifiers and sizes, spelled once."""

from __future__ import annotations

from typing import Final

from ..core import TenantId, TenantTimelineId, TimelineId

__all__ = ["MiB", "make_ttid"]

MiB: Final = 1 << 20


def make_ttid(timeline: int, tenant: int = 0xF) -> TenantTimelineId:
    """The timeline numbered ``timeline`` of the tenant numbered ``tenant``: the numbers
    are the ids' big-endian values, so distinct numbers give distinct ids."""
    return TenantTimelineId(TenantId(tenant.to_bytes(16, "big")),
                            TimelineId(timeline.to_bytes(16, "big")))
