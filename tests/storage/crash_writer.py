"""Child process of ``test_crash_consistency``: writes WAL until it is SIGKILLed.

Usage: ``crash_writer.py DIRECTORY SEED [direct|buffered]``. Opens the store in DIRECTORY
(creating it on the first run; ``direct``: with O_DIRECT writes), then loops forever
writing pseudo-random chunks, flushing, persisting a control file body with a counter,
and now and then truncating. It reports on stdout, one line per event, flushed
immediately, and only *after* the event is durable (except TRUNCATING, which announces an
intent)::

    READY <lsn> <sha>       store opened: flush position and sha256 of [start, lsn)
    FLUSHED <lsn> <sha>     flush() returned
    PERSISTED <counter>     the control file holds this counter
    TRUNCATING <lsn> <sha>  about to truncate to lsn; sha is of the bytes that will remain
    TRUNCATED <lsn> <sha>   truncate() returned
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.storage import FileControlFileStore, FileWalStore

SEG = 1 << 20
START = Lsn(SEG - 12345)  # not segment-aligned, so the first segment is partly unused
MAX_WAL = 4 * SEG  # truncate back once this much WAL exists, to keep digests cheap


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def chunk_size(rng: random.Random) -> int:
    kind = rng.random()
    if kind < 0.5:
        return rng.randint(1, 8192)
    if kind < 0.9:
        return rng.randint(8192, 200_000)
    return rng.randint(200_000, 1_500_000)


def main() -> None:
    directory, seed = Path(sys.argv[1]), int(sys.argv[2])
    direct_io = len(sys.argv) > 3 and sys.argv[3] == "direct"
    rng = random.Random(seed)
    if FileWalStore.exists(directory):
        store = FileWalStore.open(directory, SEG, direct_io=direct_io)
    else:
        store = FileWalStore.create(directory, SEG, START, direct_io=direct_io)
    control = FileControlFileStore(directory)
    body = control.load()
    counter = int(body.split()[0]) if body is not None else 0
    start = store.start_lsn
    content = bytearray()
    while len(content) < store.flush_lsn - start:
        content += store.read(start + len(content), SEG)
    hasher = hashlib.sha256(content)
    emit(f"READY {int(store.flush_lsn)} {hasher.hexdigest()}")
    while True:
        if rng.random() < 0.06 or len(content) > MAX_WAL:
            target = start + rng.randint(0, len(content))
            kept = content[: target - start]
            sha = hashlib.sha256(kept).hexdigest()
            emit(f"TRUNCATING {int(target)} {sha}")
            store.truncate(target)
            content = kept
            hasher = hashlib.sha256(content)
            emit(f"TRUNCATED {int(target)} {sha}")
            continue
        data = rng.randbytes(chunk_size(rng))
        store.write(start + len(content), data)
        content += data
        hasher.update(data)
        if rng.random() < 0.5:
            flushed = store.flush()
            emit(f"FLUSHED {int(flushed)} {hasher.hexdigest()}")
            counter += 1
            control.persist(f"{counter} {int(flushed)}".encode())
            emit(f"PERSISTED {counter}")


if __name__ == "__main__":
    main()
