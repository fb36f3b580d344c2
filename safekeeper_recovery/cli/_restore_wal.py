"""``restore-wal``: PostgreSQL's ``restore_command``, reading segments from a WAL archive.

``restore_command = 'safekeeper-recovery restore-wal %f %p --archive URL --tenant-id T
--timeline-id L'``. PostgreSQL asks for a file by name (``%f``) and where to put it
(``%p``); it also asks for files that were never archived (history files, segments past
the end) and expects a nonzero exit then. So: exit 0 once the verified segment is at
``%p`` (written aside and renamed: PostgreSQL never sees half a file); exit 1 with one
``Error:`` line for anything else (no such object, a corrupted object, an archive that does
not answer), without touching ``%p``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

import click
import trio

from ..core import ArchiveError, ArchiveObjectMissing, TenantId, TenantTimelineId, TimelineId
from ..storage import open_archive, timeline_prefix
from ._main import main
from ._options import ARCHIVE_URL, HTTP_URL, tenant_timeline_options

__all__ = ["restore_wal"]

_SEGMENT_NAME: Final = re.compile(r"[0-9A-F]{24}")


@main.command("restore-wal")
@click.argument("wal_file")
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--archive", required=True, type=ARCHIVE_URL,
              help="The WAL archive the nodes upload to (file:///DIR or s3://BUCKET/PREFIX).")
@click.option("--archive-endpoint", type=HTTP_URL,
              help="URL of the S3-compatible server of an s3:// archive (default: AWS).")
@tenant_timeline_options
def restore_wal(wal_file: str, destination: Path, archive: str, archive_endpoint: str | None,
                tenant_id: TenantId, timeline_id: TimelineId) -> None:
    """Copy WAL segment WAL_FILE (PostgreSQL's %f) from the archive to DESTINATION (%p),
    after checking its size and SHA-256; for PostgreSQL's restore_command.

    Exits 0 when the file is in place, 1 (with one Error: line, DESTINATION untouched)
    when the archive does not have it, it fails its checks, or the archive does not answer.
    """
    ttid = TenantTimelineId(tenant_id, timeline_id)
    if not _SEGMENT_NAME.fullmatch(wal_file):
        raise click.ClickException(
            f"{wal_file} is not archived: the archive holds WAL segments only (24 hex digits)")
    try:
        store = open_archive(archive, endpoint=archive_endpoint)
        data = trio.run(store.get, timeline_prefix(ttid) + wal_file)
    except ArchiveObjectMissing:
        raise click.ClickException(
            f"{wal_file} is not in archive {archive} (timeline {ttid})") from None
    except (ArchiveError, ValueError) as e:
        raise click.ClickException(f"cannot restore {wal_file}: {e}") from None
    try:
        _write_atomically(destination, data)
    except OSError as e:
        raise click.ClickException(
            f"cannot write {destination}: {e.strerror or e}; check the path and free space"
        ) from None


def _write_atomically(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` or is untouched: written aside, fsynced, renamed."""
    tmp = path.with_name(f".{path.name}.restore-wal.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
