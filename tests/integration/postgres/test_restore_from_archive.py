"""PostgreSQL uses the archive: a live PostgreSQL 15 is ingested into three nodes that
archive to ``file://``; a server made from a base backup taken without WAL replays
everything through ``restore_command = 'safekeeper-recovery restore-wal %f %p …'`` and has
the primary's data. The exit codes PostgreSQL relies on are seen from the real server: 0
for every segment it replays, nonzero for the segment past the archive's end and for the
``.history`` file it asks for when it promotes."""

from __future__ import annotations

import os
import signal
import stat
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import safekeeper_recovery
from safekeeper_recovery.core import Lsn
from safekeeper_recovery.postgres import (
    PostgresServer,
    create_timelines,
    prepare_ingest,
    running_postgres,
)
from safekeeper_recovery.testing import Cluster, wait_until

from .ingest_support import SEG, TTID, segment_name, start_ingest, wait_committed


@contextmanager
def enterable_by_others(paths: list[Path]) -> Iterator[None]:
    """Let other users traverse (``o+x``, never read) every directory above ``paths``.

    A fresh checkout may sit in a directory only root can enter (``mktemp -d`` makes 0700
    directories; ``/root`` is 0700), and the server's ``restore_command`` runs as
    ``postgres``: it must reach the interpreter's packages and the editable source. Each
    mode is put back on the way out."""
    changed: dict[Path, int] = {}
    try:
        for path in paths:
            for directory in path.resolve().parents:
                mode = directory.stat().st_mode
                if directory not in changed and not mode & stat.S_IXOTH:
                    changed[directory] = mode
                    directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
        yield
    finally:
        for directory, mode in changed.items():
            directory.chmod(stat.S_IMODE(mode))


@contextmanager
def server_user_cli(shared_dir: Path) -> Iterator[str]:
    """A ``safekeeper-recovery`` command the server user can run.

    Not root: this interpreter's own script. Root (the server runs as ``postgres``): the
    interpreter may live in a directory ``postgres`` cannot enter (``/root/.pyenv``), so a
    launcher in ``shared_dir`` runs the same package with a system Python of the same
    version (skips if there is none), with the directories above the packages made
    enterable for the run."""
    script = Path(sys.executable).parent / "safekeeper-recovery"
    if os.geteuid() != 0:
        yield str(script)
        return
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system_python = next((p for p in (f"/usr/bin/{version}", f"/usr/local/bin/{version}")
                          if os.access(p, os.X_OK)), None)
    if system_python is None:
        pytest.skip(f"no {version} the postgres user can run (restore_command)")
    site = sysconfig.get_paths()["purelib"]
    source = Path(safekeeper_recovery.__file__).parent
    launcher = shared_dir / "bin" / "safekeeper-recovery"
    launcher.parent.mkdir()
    launcher.write_text(
        "#!/bin/sh\n"
        f"exec {system_python} -c 'import site, sys; site.addsitedir(\"{site}\"); "
        "from safekeeper_recovery.cli import main; sys.argv[0] = \"safekeeper-recovery\"; "
        "sys.exit(main())' \"$@\"\n")
    launcher.chmod(0o755)
    with enterable_by_others([Path(site), source, launcher]):
        yield str(launcher)


@pytest.mark.slow
async def test_a_server_restored_from_a_base_backup_replays_from_the_archive(
    primary: PostgresServer, cluster: Cluster, shared_dir: Path,
) -> None:
    archive_dir = shared_dir / "archive"
    archive_dir.mkdir()  # the nodes write it, the server (another user) only reads it
    url = f"file://{archive_dir}"
    for node in cluster.nodes.values():
        node.extra_args += ["--archive", url]
    await cluster.start()
    plan = await prepare_ingest(primary.conninfo)
    await create_timelines(plan, TTID, [n.http_url for n in cluster.nodes.values()], None)
    ingest = await start_ingest(cluster, primary, "ingest")
    try:
        await wait_committed(cluster, [1, 2, 3], plan.timeline_start + 1, ingest)
        backup = shared_dir / "backup"
        await primary.base_backup(backup)  # -X none: every byte of WAL must be restored
        await primary.run_tool("pgbench", "-i", "-s", "3", "-q", primary.conninfo)
        await primary.run_tool("pgbench", "-n", "-c", "2", "-t", "200", primary.conninfo)
        await primary.sql("CREATE TABLE archive_marker AS SELECT 42 AS answer")
        # Complete the segment holding all of it, so that it is archived.
        switched = await primary.lsn("SELECT pg_switch_wal()")
        seg_end = Lsn((switched // SEG + 1) * SEG)
        await wait_committed(cluster, [1, 2, 3], seg_end, ingest, timeout=120)
        ingest.process.send_signal(signal.SIGTERM)
        result = await ingest.wait(timeout=60)
    finally:
        ingest.kill()
    assert result.returncode == 0, result.stderr[-3000:]

    async def archived() -> bool:
        for n in (1, 2, 3):
            status = await cluster.timeline_status(n, TTID)
            assert status.wal_lifecycle is not None
            if Lsn.parse(str(status.wal_lifecycle["backup_lsn"])) < seg_end:
                return False
        return True

    await wait_until(archived, 60, message=f"backup_lsn {seg_end} on every node")
    query = ("SELECT (SELECT sum(abalance) FROM pgbench_accounts), "
             "(SELECT count(*) FROM pgbench_history), (SELECT answer FROM archive_marker)")
    expected = await primary.sql(query)

    with server_user_cli(shared_dir) as cli:
        restore = (f"{cli} restore-wal %f %p --archive {url} --tenant-id {TTID.tenant_id} "
                   f"--timeline-id {TTID.timeline_id}")
        async with running_postgres(
            shared_dir / "restored", from_backup=backup, recovery_signal=True,
            settings={"restore_command": f"'{restore}'"},
        ) as restored:

            async def promoted() -> bool:
                return await restored.sql("SELECT pg_is_in_recovery()") == "f"

            await wait_until(promoted, 120, message="the restored server to replay the archive "
                                                   "and promote", poll=0.2)
            assert await restored.sql(query) == expected
            log = restored.log_tail(200_000)
    # Every segment from the backup's start to the switch came from restore-wal ...
    label = (backup / "backup_label").read_text()
    backup_start = Lsn.parse(label.split("START WAL LOCATION: ")[1].split()[0])
    assert backup_start >= plan.timeline_start
    for segno in range(backup_start // SEG, seg_end // SEG):
        assert f'restored log file "{segment_name(segno)}" from archive' in log, segno
    # ... which answered 1 for the first segment not in the archive (the end of archive
    # recovery) and for the history file of the new timeline; PostgreSQL went on.
    assert f"{segment_name(seg_end // SEG)} is not in archive" in log, log[-3000:]
    assert "00000002.history" in log
    assert "archive recovery complete" in log
