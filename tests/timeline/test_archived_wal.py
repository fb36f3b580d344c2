"""A donor serves WAL it removed from the archive (read pipeline rule 5, rules W1-W4 of
``timeline/_archived_wal.py``), over the memory twins."""

from __future__ import annotations

import pytest
import trio

from safekeeper_recovery.core import (
    ArchivedWalUnreadable,
    Lsn,
    StreamSenderMessage,
    WalData,
    WalRemoved,
)
from safekeeper_recovery.storage import MemoryArchive, segment_key
from safekeeper_recovery.timeline import (
    LifecycleConfig,
    LifecycleStatus,
    Timeline,
    run_wal_sender,
)

from .test_wal_lifecycle import SEG, START, Counts, run_steps, timeline_with_wal


async def stream(tl: Timeline, start: Lsn, until: Lsn,
                 archive: MemoryArchive | None) -> list[WalData]:
    """Run a WAL sender (no term: committed WAL) from ``start`` until it has sent up to
    ``until``; the WalData messages it sent, in order. Raises what the sender raises."""
    got: list[WalData] = []
    with trio.fail_after(10):  # a sender that stalls fails the test instead of hanging
        with trio.CancelScope() as scope:
            async def send(msg: StreamSenderMessage) -> None:
                if isinstance(msg, WalData):
                    got.append(msg)
                    if msg.start_lsn + len(msg.data) >= until:
                        scope.cancel()

            await run_wal_sender(tl, start, None, send, archive=archive)
    return got


async def removed_timeline(nursery: trio.Nursery) -> tuple[Timeline, MemoryArchive, bytes]:
    """A timeline whose first 3 of 4 committed segments were archived and removed, the
    archive, and the WAL it held from START before removal."""
    tl = await timeline_with_wal(nursery, 4 * SEG, commit=4 * SEG)
    before = b"".join([await tl.read_wal(Lsn(START + i * SEG), SEG) for i in range(4)])
    archive = MemoryArchive()
    # Keep the last segment (keep size): the stream must go on from disk after the archive.
    await run_steps(tl, LifecycleConfig(archive=archive, keep_bytes=SEG), LifecycleStatus(),
                    Counts())
    assert tl.store.start_lsn == START + 3 * SEG
    return tl, archive, before


async def test_a_donor_streams_removed_wal_from_the_archive_then_from_disk(
    nursery: trio.Nursery,
) -> None:
    tl, archive, before = await removed_timeline(nursery)
    start = Lsn(START + SEG // 2 + 8192)  # mid-segment, as a recovering peer asks
    got = await stream(tl, start, tl.commit_lsn, archive)
    assert b"".join(m.data for m in got) == before[start - START:]
    pos = start
    for m in got:  # contiguous, never across a segment, ends and timestamps as from disk
        assert m.start_lsn == pos
        assert m.start_lsn // SEG == (m.start_lsn + len(m.data) - 1) // SEG
        assert m.wal_end == tl.commit_lsn
        pos = Lsn(pos + len(m.data))
    assert pos == tl.commit_lsn


async def test_without_an_archive_removed_wal_is_wal_removed(nursery: trio.Nursery) -> None:
    tl, _, _ = await removed_timeline(nursery)
    with pytest.raises(WalRemoved, match="was removed"):
        await stream(tl, START, tl.commit_lsn, None)


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "missing"])
async def test_a_damaged_or_missing_archived_segment_is_never_served(
    nursery: trio.Nursery, damage: str,
) -> None:
    tl, archive, before = await removed_timeline(nursery)
    key = segment_key(tl.ttid, START // SEG + 1, SEG)  # the second segment
    match damage:
        case "corrupt":
            archive.objects[key] = archive.objects[key][:-1] + b"\xff"
        case "truncated":
            archive.objects[key] = archive.objects[key][:-100]
        case "missing":
            del archive.objects[key]
    got: list[WalData] = []

    async def send(msg: StreamSenderMessage) -> None:
        if isinstance(msg, WalData):
            got.append(msg)

    with pytest.raises(ArchivedWalUnreadable) as stopped, trio.fail_after(10):
        await run_wal_sender(tl, START, None, send, archive=archive)
    assert stopped.value.close_code == 4011
    assert stopped.value.kind == ("missing" if damage == "missing" else "corrupt")
    assert key.rsplit("/", 1)[1] in str(stopped.value)
    # The first segment went out whole and right; nothing of the damaged one did.
    sent = b"".join(m.data for m in got)
    assert sent == before[:SEG]


async def test_a_start_before_the_timeline_is_wal_removed_even_with_an_archive(
    nursery: trio.Nursery,
) -> None:
    tl, archive, _ = await removed_timeline(nursery)
    with pytest.raises(WalRemoved, match="the timeline at"):
        await stream(tl, Lsn(START - 8192), tl.commit_lsn, archive)
