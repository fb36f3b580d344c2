"""Reading WAL below a node's removal horizon back from the archive (issue 14, part 5).

A donor whose WAL was removed below its horizon serves that part to a recovering peer
from the archive, transparently: the peer sees the same ``WalData`` it would have got from
the donor's disk (the way Neon's WAL reader falls back to S3). :class:`ArchivedWalReader`
is what the read pipeline uses for it.

Rules
-----
W1  Only WAL at or past the timeline's start and below this node's local start is read
    from the archive; everything else comes from disk (the caller decides).
W2  A segment is fetched whole through ``Archive.get``, which verifies its size and
    SHA-256 against the record made at upload (rule A2); it must also be exactly one
    segment long. The bytes handed out are slices of that verified object only.
W3  A missing object, a corrupted or truncated one, or an archive that does not answer
    raises :class:`ArchivedWalUnreadable` (close code 4011, ``kind`` = the archive
    error's kind) before any byte of that segment is handed out: never a short or
    wrong answer.
W4  One segment is held in memory at a time (the one being streamed); reading on into the
    next segment replaces it.
"""

from __future__ import annotations

import logging
from typing import final

from ..core import ArchivedWalUnreadable, ArchiveError, Lsn, TenantTimelineId
from ..storage import Archive, segment_key

__all__ = ["ArchivedWalReader"]

log = logging.getLogger(__name__)


@final
class ArchivedWalReader:
    """Reads one timeline's archived segments for one stream (rules W1-W4).

    ``fetched_segments``/``fetched_bytes`` count what came from the archive (for logs and
    tests)."""

    def __init__(self, archive: Archive, ttid: TenantTimelineId, seg_size: int) -> None:
        self._archive = archive
        self._ttid = ttid
        self._seg_size = seg_size
        self._segno: int | None = None
        self._data = b""
        self.fetched_segments = 0
        self.fetched_bytes = 0

    @property
    def url(self) -> str:
        return self._archive.url

    async def read(self, pos: Lsn, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of archived WAL from ``pos``, never crossing a segment and
        never empty. Raises :class:`ArchivedWalUnreadable` (rule W3)."""
        segno = int(pos) // self._seg_size
        if self._segno != segno:
            self._data = b""
            self._segno = None
            self._data = await self._fetch(segno)
            self._segno = segno
        offset = pos.segment_offset(self._seg_size)
        return self._data[offset:offset + max_bytes]

    async def _fetch(self, segno: int) -> bytes:
        key = segment_key(self._ttid, segno, self._seg_size)
        where = f"{self._archive.url.rstrip('/')}/{key}"
        try:
            data = await self._archive.get(key)
        except ArchiveError as e:
            # The kind and segment come first: a close reason keeps only 123 bytes.
            raise ArchivedWalUnreadable(
                f"archive {e.kind}: removed segment {key.rsplit('/', 1)[1]} is not served "
                f"from the archive: {e}", kind=e.kind) from e
        if len(data) != self._seg_size:
            raise ArchivedWalUnreadable(
                f"archive corrupt: archive object {where} has {len(data)} bytes, not one "
                f"{self._seg_size}-byte WAL segment: it is not served", kind="corrupt")
        self.fetched_segments += 1
        self.fetched_bytes += len(data)
        log.info("timeline %s: serving removed segment %s from the archive", self._ttid, key)
        return data
