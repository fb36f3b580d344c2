"""Real crashes: SIGKILL a writer process at random moments and check what survived.

Each round starts ``crash_writer.py`` on the same directory (so it continues from what the
previous round left), kills it 20-300 ms after it is ready (or, now and then, while it is
still starting), then opens the store and control file here and checks them against the
last events the child reported as durable. Set ``CRASH_TEST_SEED`` to replay a run.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import attrs

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.storage import FileControlFileStore, FileWalStore

SEG = 1 << 20
ROUNDS = 50
WRITER = Path(__file__).with_name("crash_writer.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE = 20.0


@attrs.define
class Reported:
    """What the child has told us is durable."""

    lsn: int | None = None
    sha: str | None = None
    pending_truncation: tuple[int, str] | None = None
    counter: int = 0

    def apply(self, line: str) -> None:
        kind, *args = line.split()
        if kind in ("READY", "FLUSHED", "TRUNCATED"):
            self.lsn, self.sha = int(args[0]), args[1]
            self.pending_truncation = None
        elif kind == "TRUNCATING":
            self.pending_truncation = (int(args[0]), args[1])
        elif kind == "PERSISTED":
            self.counter = int(args[0])
        else:
            raise AssertionError(f"unexpected line from writer: {line!r}")


def read_lines(stream: object, out: queue.Queue[str | None]) -> None:
    assert hasattr(stream, "readline")
    for raw in iter(stream.readline, b""):
        if raw.endswith(b"\n"):  # a line cut by the kill is not a report
            out.put(raw.decode().rstrip("\n"))
    out.put(None)


def run_round(directory: Path, rng: random.Random, reported: Reported, log: Path,
              *, direct_io: bool = False) -> int:
    """Start the writer, kill it, fold its reports into ``reported``; return lines read."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with log.open("ab") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(directory), str(rng.randrange(2**32)),
             "direct" if direct_io else "buffered"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    got: list[str] = []
    try:
        if rng.random() < 0.15:
            time.sleep(rng.uniform(0.0, 0.3))  # the kill moment: maybe during start-up
        else:
            deadline = time.monotonic() + START_DEADLINE
            while not got or not got[-1].startswith("READY"):
                remaining = deadline - time.monotonic()
                assert remaining > 0, "writer did not become ready in time"
                line = lines.get(timeout=remaining)
                assert line is not None, f"writer exited early; see {log}"
                got.append(line)
            time.sleep(rng.uniform(0.020, 0.300))  # the kill moment
        assert proc.poll() is None, f"writer exited with {proc.returncode}; see {log}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        reader.join(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    while (line := lines.get_nowait()) is not None:
        got.append(line)
    for line in got:
        reported.apply(line)
    return len(got)


def check_survivors(directory: Path, reported: Reported) -> None:
    if not FileWalStore.exists(directory):
        assert reported.lsn is None, "store vanished after it reported being ready"
        return
    store = FileWalStore.open(directory, SEG)
    try:
        start, flush = store.start_lsn, store.flush_lsn
        assert store.write_lsn == flush
        if reported.lsn is not None:
            assert reported.sha is not None
            last_ok = flush >= reported.lsn and (
                store.digest(start, Lsn(reported.lsn)) == reported.sha
            )
            pending = reported.pending_truncation
            truncated_ok = (
                not last_ok
                and pending is not None
                and flush == pending[0]
                and store.digest(start, flush) == pending[1]
            )
            if truncated_ok:
                assert pending is not None
                reported.lsn, reported.sha = pending
            assert last_ok or truncated_ok, (
                f"store at {flush} does not hold the reported WAL: last reported "
                f"{Lsn(reported.lsn)}, pending truncation {pending}"
            )
        # What survived is the new baseline (the next writer will report it as READY).
        if flush != reported.lsn:
            reported.lsn, reported.sha = int(flush), store.digest(start, flush)
        reported.pending_truncation = None
    finally:
        store.close()
    body = FileControlFileStore(directory).load()  # raises CorruptionError if torn
    if reported.counter:
        assert body is not None, "control file lost"
    on_disk = int(body.split()[0]) if body is not None else 0
    # The child persists before reporting, so disk may be one ahead of the report.
    assert reported.counter <= on_disk <= reported.counter + 1, (on_disk, reported.counter)
    reported.counter = on_disk


def test_store_survives_sigkill_at_random_moments(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_TEST_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    directory = tmp_path / "timeline"
    log = tmp_path / "writer-stderr.log"
    reported = Reported()
    total_lines = 0
    for round_no in range(ROUNDS):
        try:
            # Alternate O_DIRECT and buffered writers over the same files: each must
            # continue from what the other left, including a half-written block.
            total_lines += run_round(directory, rng, reported, log,
                                     direct_io=round_no % 2 == 1)
            check_survivors(directory, reported)
        except AssertionError as exc:
            raise AssertionError(
                f"crash round {round_no} failed (CRASH_TEST_SEED={seed}): {exc}"
            ) from exc
    # The run must have done real work, not just killed writers during start-up.
    assert reported.counter > ROUNDS // 2, f"too few flushes (CRASH_TEST_SEED={seed})"
    assert total_lines > ROUNDS, f"too few reports (CRASH_TEST_SEED={seed})"
