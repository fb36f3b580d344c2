"""A timeline whose control file is corrupt is reported broken at start; the rest work."""

from __future__ import annotations

import pytest

from safekeeper_recovery.testing import make_ttid
from safekeeper_recovery.transport import HttpError

from .conftest import ClusterFactory

GOOD = make_ttid(1, tenant=0xC)
BAD = make_ttid(2, tenant=0xC)


@pytest.mark.slow
async def test_corrupt_control_file_breaks_only_its_timeline(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(1)
    node = cluster[1]
    await cluster.start()
    await cluster.create_timeline(GOOD)
    await cluster.create_timeline(BAD)
    await node.terminate()

    control = node.data_dir / str(BAD.tenant_id) / str(BAD.timeline_id) / "safekeeper.control"
    raw = bytearray(control.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    control.write_bytes(bytes(raw))
    await node.start()

    async with node.client() as client:
        listing = await client.timelines()
        broken = [t for t in listing if t.get("broken")]
        assert [t.get("timeline_id") for t in broken] == [str(BAD.timeline_id)], listing
        with pytest.raises(HttpError) as info:
            await client.timeline_status(BAD)
        assert info.value.status in (404, 409, 500, 503), info.value
        assert "broken" in str(info.value) or "load" in str(info.value), info.value
        assert (await client.typed_timeline_status(GOOD)).broken is None
        assert "failed to load" in node.stderr()
