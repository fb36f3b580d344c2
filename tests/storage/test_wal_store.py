"""The ``WalStore`` contract, run against both ``FileWalStore`` and ``MemoryWalStore``."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from safekeeper_recovery.core import Lsn, StorageError
from safekeeper_recovery.storage import FileWalStore, MemoryWalStore, WalStore
from safekeeper_recovery.testing import MiB

SEG = MiB


@attrs.frozen
class Kind:
    """How to make and reopen one kind of store (reopen = close + open after a restart)."""

    name: str
    make: Callable[[int, Lsn], WalStore]
    reopen: Callable[[WalStore], WalStore]


def file_kind(directory: Path, *, direct_io: bool = False) -> Kind:
    def make(seg_size: int, start: Lsn) -> WalStore:
        return FileWalStore.create(directory, seg_size, start, direct_io=direct_io)

    def reopen(store: WalStore) -> WalStore:
        store.close()
        return FileWalStore.open(directory, store.seg_size, direct_io=direct_io)

    return Kind("direct" if direct_io else "file", make, reopen)


def memory_kind() -> Kind:
    def reopen(store: WalStore) -> WalStore:
        assert isinstance(store, MemoryWalStore)
        store.close()
        return store.crash()

    return Kind("memory", MemoryWalStore, reopen)


def make_kind(name: str, directory: Path) -> Kind:
    """``file`` (buffered), ``direct`` (O_DIRECT writes) or ``memory``."""
    if name == "memory":
        return memory_kind()
    return file_kind(directory, direct_io=name == "direct")


@pytest.fixture(params=["file", "direct", "memory"])
def kind(request: pytest.FixtureRequest, tmp_path: Path) -> Kind:
    return make_kind(request.param, tmp_path / "tl")


@pytest.fixture
def store(kind: Kind) -> Iterator[WalStore]:
    s = kind.make(SEG, Lsn(0))
    yield s
    s.close()


def pattern(start: int, length: int) -> bytes:
    """Deterministic bytes that differ with position, so misplaced bytes are noticed."""
    return bytes((start + i) * 7 % 251 for i in range(length))


def test_new_store_starts_with_all_positions_at_start_lsn(kind: Kind) -> None:
    s = kind.make(SEG, Lsn(0x1234))
    assert (s.start_lsn, s.write_lsn, s.flush_lsn, s.seg_size) == (0x1234, 0x1234, 0x1234, SEG)
    s.close()


@pytest.mark.parametrize("bad", [0, MiB - 1, MiB + 1, 3 * MiB, 2 << 30, 1 << 19])
def test_invalid_segment_size_is_refused(kind: Kind, bad: int) -> None:
    with pytest.raises(ValueError, match="segment size"):
        kind.make(bad, Lsn(0))


def test_sequential_writes_move_write_lsn_and_flush_makes_them_durable(store: WalStore) -> None:
    store.write(Lsn(0), b"abc")
    store.write(Lsn(3), b"defg")
    assert store.write_lsn == 7
    assert store.flush_lsn == 0
    assert store.flush() == 7
    assert store.flush_lsn == 7
    assert store.read(Lsn(0), 100) == b"abcdefg"


def test_rewrite_is_refused_naming_both_positions(store: WalStore) -> None:
    store.write(Lsn(0), b"abcdef")
    with pytest.raises(StorageError, match=r"rewrite.*0/3.*0/6"):
        store.write(Lsn(3), b"x")
    assert store.write_lsn == 6


def test_gap_is_refused_naming_both_positions(store: WalStore) -> None:
    store.write(Lsn(0), b"abc")
    with pytest.raises(StorageError, match=r"gap.*0/A.*0/3"):
        store.write(Lsn(10), b"x")
    assert store.write_lsn == 3


def test_write_is_split_across_segments_and_reads_back(store: WalStore) -> None:
    data = pattern(0, 2 * SEG + SEG // 2)
    store.write(Lsn(0), data[:100])
    store.write(Lsn(100), data[100:])
    store.flush()
    got = bytearray()
    while len(got) < len(data):
        got += store.read(Lsn(len(got)), 3 * SEG)
    assert got == data


def test_read_never_crosses_a_segment_boundary(store: WalStore) -> None:
    store.write(Lsn(0), pattern(0, SEG + 1000))
    store.flush()
    chunk = store.read(Lsn(SEG - 10), 4096)
    assert chunk == pattern(SEG - 10, 10)
    assert store.read(Lsn(SEG), 4096) == pattern(SEG, 1000)


def test_read_serves_only_durable_bytes(store: WalStore) -> None:
    store.write(Lsn(0), b"0123456789")
    assert store.read(Lsn(0), 100) == b""
    store.flush()
    store.write(Lsn(10), b"abcdef")
    assert store.read(Lsn(0), 100) == b"0123456789"
    assert store.read(Lsn(10), 100) == b""
    assert store.read(Lsn(500), 100) == b""
    assert store.read(Lsn(4), 3) == b"456"


def test_read_below_start_lsn_says_the_wal_is_not_available(kind: Kind) -> None:
    s = kind.make(SEG, Lsn(SEG + 16))
    s.write(Lsn(SEG + 16), b"x")
    s.flush()
    with pytest.raises(StorageError, match=r"WAL at 0/100000 is not available.*starts at 0/100010"):
        s.read(Lsn(SEG), 1)
    with pytest.raises(ValueError, match="max_bytes"):
        s.read(Lsn(SEG + 16), 0)
    s.close()


def test_truncate_within_a_segment(store: WalStore) -> None:
    store.write(Lsn(0), pattern(0, 1000))
    store.flush()
    store.truncate(Lsn(400))
    assert (store.write_lsn, store.flush_lsn) == (400, 400)
    assert store.read(Lsn(0), 2000) == pattern(0, 400)


def test_truncate_across_segments_then_write_continues_there(store: WalStore) -> None:
    store.write(Lsn(0), pattern(0, 3 * SEG + 77))
    store.flush()
    store.truncate(Lsn(SEG + 5))
    assert (store.write_lsn, store.flush_lsn) == (SEG + 5, SEG + 5)
    assert store.read(Lsn(SEG), 100) == pattern(SEG, 5)
    store.write(Lsn(SEG + 5), b"new!" * 1000)
    store.flush()
    assert store.read(Lsn(SEG), 9) == pattern(SEG, 5) + b"new!"
    assert store.read(Lsn(SEG + 5 + 3996), 100) == b"new!"


def test_truncate_to_a_segment_start_and_to_the_start_lsn(store: WalStore) -> None:
    store.write(Lsn(0), pattern(0, 2 * SEG + 3))
    store.flush()
    store.truncate(Lsn(2 * SEG))
    assert store.flush_lsn == 2 * SEG
    store.truncate(Lsn(0))
    assert (store.write_lsn, store.flush_lsn) == (0, 0)
    store.write(Lsn(0), b"again")
    store.flush()
    assert store.read(Lsn(0), 10) == b"again"


def test_truncate_above_flush_lsn_keeps_and_makes_durable_the_bytes_below(kind: Kind) -> None:
    s = kind.make(SEG, Lsn(0))
    s.write(Lsn(0), pattern(0, 100))
    s.flush()
    s.write(Lsn(100), pattern(100, SEG))
    s.truncate(Lsn(SEG + 50))
    assert (s.write_lsn, s.flush_lsn) == (SEG + 50, SEG + 50)
    s = kind.reopen(s)
    assert s.flush_lsn == SEG + 50
    assert s.digest(Lsn(0), Lsn(SEG + 50)) == hashlib.sha256(pattern(0, SEG + 50)).hexdigest()
    s.close()


def test_truncate_outside_the_written_range_is_refused(kind: Kind) -> None:
    s = kind.make(SEG, Lsn(100))
    s.write(Lsn(100), b"abc")
    with pytest.raises(StorageError, match="within"):
        s.truncate(Lsn(104))
    with pytest.raises(StorageError, match="within"):
        s.truncate(Lsn(99))
    assert s.write_lsn == 103
    s.close()


def test_digest_is_sha256_of_the_durable_range(store: WalStore) -> None:
    data = pattern(0, SEG + 4321)
    store.write(Lsn(0), data)
    store.flush()
    assert store.digest(Lsn(10), Lsn(SEG + 20)) == hashlib.sha256(data[10 : SEG + 20]).hexdigest()
    assert store.digest(Lsn(5), Lsn(5)) == hashlib.sha256(b"").hexdigest()
    store.write(Lsn(len(data)), b"unflushed")
    with pytest.raises(StorageError, match="digest"):
        store.digest(Lsn(0), store.write_lsn)
    with pytest.raises(StorageError, match="digest"):
        store.digest(Lsn(20), Lsn(10))


def test_reopen_after_close_returns_the_same_positions_and_bytes(kind: Kind) -> None:
    start = Lsn(3 * SEG - 1000)
    s = kind.make(SEG, start)
    data = pattern(int(start), 2 * SEG)
    s.write(start, data)
    s.flush()
    s = kind.reopen(s)
    assert (s.start_lsn, s.write_lsn, s.flush_lsn) == (start, start + len(data), start + len(data))
    assert s.digest(start, s.flush_lsn) == hashlib.sha256(data).hexdigest()
    s.write(s.write_lsn, b"more")
    s.flush()
    assert s.read(start + len(data), 10) == b"more"
    s.close()


def test_unflushed_bytes_count_as_never_written_after_reopen(kind: Kind) -> None:
    s = kind.make(SEG, Lsn(0))
    s.write(Lsn(0), b"durable")
    s.flush()
    s.write(Lsn(7), pattern(7, 2 * SEG))
    s = kind.reopen(s)
    assert (s.write_lsn, s.flush_lsn) == (7, 7)
    s.write(Lsn(7), b"!")
    s.flush()
    assert s.read(Lsn(0), 100) == b"durable!"
    s.close()


def test_closed_store_refuses_calls(store: WalStore) -> None:
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.write(Lsn(0), b"x")


# -- a model-based test: random operations against a bytearray ----------------------------


class WalStoreMachine(RuleBasedStateMachine):
    """Random write/flush/truncate/reopen sequences checked against a bytearray model."""

    kind_name = "memory"

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.kind = (
            make_kind(self.kind_name, Path(self._tmp.name) / "tl")
        )
        self.start = 0
        self.model = bytearray()  # bytes [start, write)
        self.flushed = 0  # model flush position (absolute)
        self.store: WalStore | None = None
        self.counter = 0

    @initialize(start=st.integers(0, 3 * SEG))
    def create(self, start: int) -> None:
        self.start = self.flushed = start
        self.store = self.kind.make(SEG, Lsn(start))

    @property
    def s(self) -> WalStore:
        assert self.store is not None
        return self.store

    @property
    def write_end(self) -> int:
        return self.start + len(self.model)

    @rule(size=st.integers(1, 300_000) | st.sampled_from([SEG, SEG - 1, SEG + 1]))
    def write(self, size: int) -> None:
        self.counter += 1
        data = bytes([self.counter % 256]) * size
        self.s.write(Lsn(self.write_end), data)
        self.model += data

    @rule()
    def flush(self) -> None:
        assert self.s.flush() == self.write_end
        self.flushed = self.write_end

    @rule(frac=st.floats(0, 1))
    def truncate(self, frac: float) -> None:
        target = self.start + int(len(self.model) * frac)
        self.s.truncate(Lsn(target))
        del self.model[target - self.start :]
        self.flushed = target

    @rule()
    def reopen(self) -> None:
        self.store = self.kind.reopen(self.s)
        del self.model[self.flushed - self.start :]

    @precondition(lambda self: self.flushed > self.start)
    @rule(at=st.floats(0, 1), size=st.integers(1, 2 * SEG))
    def read(self, at: float, size: int) -> None:
        pos = self.start + int((self.flushed - self.start - 1) * at)
        got = self.s.read(Lsn(pos), size)
        limit = min(size, self.flushed - pos, SEG - pos % SEG)
        assert got == self.model[pos - self.start : pos - self.start + limit]

    @invariant()
    def positions_match(self) -> None:
        if self.store is None:
            return
        assert self.s.write_lsn == self.write_end
        assert self.s.flush_lsn == self.flushed

    @precondition(lambda self: self.store is not None)
    @rule()
    def digest_matches(self) -> None:
        want = hashlib.sha256(self.model[: self.flushed - self.start]).hexdigest()
        assert self.s.digest(Lsn(self.start), Lsn(self.flushed)) == want

    def teardown(self) -> None:
        if self.store is not None:
            self.store.close()
        self._tmp.cleanup()


class FileWalStoreMachine(WalStoreMachine):
    kind_name = "file"


class DirectWalStoreMachine(WalStoreMachine):
    kind_name = "direct"


_machine_settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMemoryWalStoreAgainstModel = WalStoreMachine.TestCase
TestMemoryWalStoreAgainstModel.settings = _machine_settings
TestFileWalStoreAgainstModel = FileWalStoreMachine.TestCase
TestFileWalStoreAgainstModel.settings = _machine_settings
TestDirectWalStoreAgainstModel = DirectWalStoreMachine.TestCase
TestDirectWalStoreAgainstModel.settings = _machine_settings
