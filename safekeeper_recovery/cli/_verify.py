"""``verify``: walk a timeline's WAL record by record and report the first corruption.

Library functions (the command is a thin shell around them):

* :func:`verify_node` reads a running node's WAL over its WAL port (``wal_stream`` in the
  node's current term, from the timeline's local start to the flush_lsn it reports when
  asked), streaming: nothing beyond one message is held in memory.
* :func:`verify_data_dir` reads a node's segment files for one timeline directly, opening
  everything read-only: it never settles, truncates or renames anything, and takes no
  lock, so it is safe on a node that crashed and works on a running node's directory
  (checking the WAL up to the flush position recorded when it starts; bytes below a flush
  position are never rewritten, except by a new proposer's truncation, which a stopped
  node or ``verify --node`` rules out).

Both return a :class:`~safekeeper_recovery.pgwal.VerifyReport` (``ok`` or the first
corruption with its LSN) and raise :class:`VerifyError` when they cannot read the WAL.
Exit codes of the command: 0 valid to the end, 1 corruption found, 2 usage or
connection/read error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final, NoReturn

import click
import trio
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from .._console import BinaryRateColumn, make_console
from ..core import (
    Lsn,
    SafekeeperError,
    TenantId,
    TenantTimelineId,
    TimelineId,
    WalData,
    decode_state,
    segment_file_name,
)
from ..pgwal import VerifyReport, WalVerifier
from ..storage import (  # read-only use: open, read, close
    FileControlFileStore,
    FlushPositionFile,
    read_mark,
    read_removal_horizon,
)
from ..transport import (
    HttpError,
    SafekeeperClient,
    WalConnectError,
    WalStreamClosed,
    open_wal_stream,
)
from ._main import main
from ._options import HTTP_URL, LSN, tenant_timeline_options, timeout_option, token_file_option

__all__ = ["VerifyError", "verify_command", "verify_data_dir", "verify_node"]

Progress_ = Callable[[int, int], None]
"""``(bytes_checked, bytes_total)`` after every chunk."""

EXIT_VALID: Final = 0
EXIT_CORRUPT: Final = 1
EXIT_ERROR: Final = 2
_READ_CHUNK: Final = 1024 * 1024


class VerifyError(SafekeeperError):
    """The WAL could not be read (unreachable node, missing timeline, unreadable files)."""


def _lsn_of(doc: dict[str, object], name: str) -> Lsn:
    value = doc.get(name)
    if not isinstance(value, str):
        raise VerifyError(f"timeline status lacks {name}")
    return Lsn.parse(value)


def _int_of(doc: object, *path: str) -> int:
    for key in path:
        if not isinstance(doc, dict):
            raise VerifyError(f"timeline status lacks {'.'.join(path)}")
        doc = doc.get(key)
    if not isinstance(doc, int):
        raise VerifyError(f"timeline status lacks {'.'.join(path)}")
    return doc


async def verify_node(
    node: str,
    ttid: TenantTimelineId,
    *,
    token: str | None = None,
    start_lsn: Lsn | None = None,
    timeout: float = 10.0,
    data_timeout: float = 30.0,
    on_progress: Progress_ | None = None,
) -> VerifyReport:
    """Verify the timeline's WAL on the node whose HTTP API is at ``node``.

    The WAL checked is ``start_lsn`` (default: the node's local start of the timeline, or
    its removal horizon once WAL was removed) up
    to the flush_lsn the node reports first; it is read over ``wal_stream`` in the node's
    current term, so a term change while reading (a new proposer) is a ``VerifyError``
    rather than a false corruption. ``timeout`` bounds each HTTP request and the connect;
    ``data_timeout`` a silence of the stream.
    """
    try:
        async with SafekeeperClient(node, token=token, timeout=timeout) as client:
            node_status = await client.status()
            status = await client.timeline_status(ttid)
    except HttpError as e:
        raise VerifyError(f"{node}: {e}") from None
    wal_addr = node_status.get("wal_addr")
    if not isinstance(wal_addr, str) or not wal_addr:
        raise VerifyError(f"{node} does not report its WAL address")
    seg_size = _int_of(status, "wal_seg_size")
    system_id = _int_of(status, "pg_info", "system_id") or None
    term = _int_of(status, "acceptor_state", "term")
    local_start = max(_lsn_of(status, "timeline_start_lsn"), _lsn_of(status, "local_start_lsn"))
    lifecycle = status.get("wal_lifecycle")
    if isinstance(lifecycle, dict):  # WAL below the removal horizon is gone from the node
        local_start = max(local_start, _lsn_of(lifecycle, "removal_horizon"))
    start = local_start if start_lsn is None else start_lsn
    end = _lsn_of(status, "flush_lsn")
    if not local_start <= start <= end:
        raise VerifyError(f"start {start} is outside the node's WAL {local_start}..{end}")
    verifier = _verifier(start, end, seg_size, system_id)
    if start == end:
        return verifier.finish()
    pos = start
    try:
        async with open_wal_stream(
            wal_addr, ttid.tenant_id, ttid.timeline_id, start, term=term, token=token,
            connect_timeout=timeout,
        ) as stream:
            while pos < end:
                with trio.fail_after(data_timeout):
                    msg = await stream.receive()
                if not isinstance(msg, WalData) or not msg.data:
                    continue  # keepalives
                if msg.start_lsn != pos:
                    raise VerifyError(f"{wal_addr} sent WAL at {msg.start_lsn}, expected {pos}")
                pos = msg.end_lsn
                going_on = verifier.feed(msg.data)
                if on_progress is not None:
                    on_progress(min(pos, end) - start, end - start)
                if not going_on:
                    break
    except WalStreamClosed as e:
        why = "the timeline's term changed (a new proposer?); run verify again" if (
            e.term_changed
        ) else str(e)
        raise VerifyError(f"{wal_addr}: WAL stream ended at {pos} before {end}: {why}") from None
    except WalConnectError as e:
        raise VerifyError(str(e)) from None
    except trio.TooSlowError:
        raise VerifyError(f"{wal_addr}: no WAL for {data_timeout} s at {pos}") from None
    return verifier.finish()


def verify_data_dir(
    data_dir: Path,
    ttid: TenantTimelineId,
    *,
    start_lsn: Lsn | None = None,
    on_progress: Progress_ | None = None,
) -> VerifyReport:
    """Verify the timeline's WAL in a node's ``data_dir`` (read-only, blocking, no lock:
    the node may be running).

    Checks the WAL from the store's start (its removal horizon once WAL was removed; or
    ``start_lsn``) to its recorded flush
    position, lowered to a pending truncation's target if one is marked (as the node
    would on start-up). A WAL ending inside a record there is a torn tail, not corruption
    (the node stopped or flushed part-way through it).
    """
    directory = data_dir / str(ttid.tenant_id) / str(ttid.timeline_id)
    if not directory.is_dir():
        raise VerifyError(f"no timeline directory {directory}")
    try:
        body = FileControlFileStore(directory).load()
        if body is None:
            raise VerifyError(f"{directory} has no control file")
        state = decode_state(body)
        positions = FlushPositionFile.open(directory)
        if positions is None:
            raise VerifyError(f"{directory} has no flush position file")
        try:
            store_start, end = positions.start_lsn, positions.lsn
        finally:
            positions.close()
        store_start = max(store_start, read_removal_horizon(directory) or store_start)
        mark = read_mark(directory)
    except SafekeeperError as e:
        if isinstance(e, VerifyError):
            raise
        raise VerifyError(str(e)) from None
    if mark is not None:
        end = min(end, mark)
    seg_size = state.server.wal_seg_size
    start = store_start if start_lsn is None else start_lsn
    if not store_start <= start <= end:
        raise VerifyError(f"start {start} is outside the stored WAL {store_start}..{end}")
    verifier = _verifier(start, end, seg_size, state.server.system_id or None)
    pos = start
    while pos < end:
        segno = pos.segment_number(seg_size)
        seg_end = min(int(end), (segno + 1) * seg_size)
        path, fd = _open_segment(directory, segno, seg_size)
        try:
            while pos < seg_end:
                n = min(_READ_CHUNK, seg_end - pos)
                data = os.pread(fd, n, pos.segment_offset(seg_size))
                if len(data) != n:
                    raise VerifyError(f"{path} is short: no bytes at {pos + len(data)}")
                pos += n
                going_on = verifier.feed(data)
                if on_progress is not None:
                    on_progress(pos - start, end - start)
                if not going_on:
                    return verifier.finish()
        except OSError as e:
            raise VerifyError(f"cannot read {path}: {e}") from None
        finally:
            os.close(fd)
    return verifier.finish()


def _open_segment(directory: Path, segno: int, seg_size: int) -> tuple[Path, int]:
    """The segment's path and a read-only fd. A running node renames the current
    ``.partial`` segment once it is full, so both names are tried, twice."""
    name = segment_file_name(segno, seg_size)
    candidates = (directory / name, directory / f"{name}.partial")
    for path in (*candidates, *candidates):
        try:
            return path, os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise VerifyError(f"cannot open {path}: {e}") from None
    raise VerifyError(f"segment {name} is missing in {directory}")


def _verifier(start: Lsn, end: Lsn, seg_size: int, system_id: int | None) -> WalVerifier:
    try:
        return WalVerifier(start, end, seg_size, system_id=system_id)
    except ValueError as e:
        raise VerifyError(str(e)) from None


# ---- the command ------------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_ERROR)


@main.command("verify")
@click.option("--node", type=HTTP_URL, help="A running node's HTTP API (or --data-dir).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A node's data directory, read directly (read-only, no lock: the node may be "
    "running; or --node).",
)
@tenant_timeline_options
@token_file_option("File holding a JWT (safekeeperdata scope: verify reads /v1/status) for "
                   "a node with auth on.")
@click.option(
    "--start-lsn",
    type=LSN,
    help="Start here (a record boundary) instead of at the timeline's start.",
)
@timeout_option()
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr (default: when stderr is a terminal).",
)
def verify_command(
    node: str | None,
    data_dir: Path | None,
    tenant_id: TenantId,
    timeline_id: TimelineId,
    token_file: Path | None,
    start_lsn: Lsn | None,
    timeout: float,
    progress: bool | None,
) -> None:
    """Check a timeline's WAL record by record: page headers, record lengths, CRC32C.

    Prints the last valid record and the first corruption, if any. Exit status: 0 the WAL
    is valid to its end, 1 corruption found (the LSN of the bad record is printed), 2 the
    WAL could not be read or the command was misused.
    """
    if (node is None) == (data_dir is None):
        raise click.UsageError("give exactly one of --node and --data-dir")
    ttid = TenantTimelineId(tenant_id, timeline_id)
    token = token_file.read_text().strip() if token_file is not None else None
    console = make_console(stderr=True)
    show = console.is_terminal if progress is None else progress
    columns = (
        TextColumn("[bold]verifying"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        BinaryRateColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not show) as bar:
        task = bar.add_task("verify", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            if node is not None:
                report = trio.run(
                    lambda: verify_node(
                        node, ttid, token=token, start_lsn=start_lsn, timeout=timeout,
                        on_progress=advance,
                    )
                )
            else:
                assert data_dir is not None, "one of --node / --data-dir is given"
                report = verify_data_dir(data_dir, ttid, start_lsn=start_lsn, on_progress=advance)
        except SafekeeperError as e:
            _fail(str(e))
    click.echo(report.summary())
    sys.exit(EXIT_VALID if report.ok else EXIT_CORRUPT)
