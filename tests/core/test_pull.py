"""Core rules B1-B5 of a pull (``core/_pull.py``): donor choice and the snapshot frames."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safekeeper_recovery.core import (
    Lsn,
    NodeId,
    PullCandidate,
    PullTermChanged,
    SnapshotDecoder,
    SnapshotEnd,
    SnapshotHeader,
    SnapshotInvalid,
    SnapshotWal,
    choose_pull_donor,
    encode_abort,
    encode_end,
    encode_header,
    encode_wal,
)

START = Lsn(0x1000000)


def cand(url: str, term: int, llt: int, flush: int) -> PullCandidate:
    return PullCandidate(url, term, llt, Lsn(flush))


def test_b1_the_donor_is_the_most_advanced_by_log_never_by_term() -> None:
    high_term_old_log = cand("http://a", 1000, 3, 0x2000000)
    newer_log = cand("http://b", 5, 4, 0x1800000)
    longer_same_log = cand("http://c", 5, 4, 0x1900000)
    choice = choose_pull_donor([high_term_old_log, newer_log, longer_same_log], ["http://d: down"])
    assert choice.donor == longer_same_log
    assert choice.ranked == (longer_same_log, newer_log, high_term_old_log)
    assert "http://d: down" in str(choice)
    assert "donor=http://c" in str(choice)


def test_b1_ties_go_to_the_source_listed_first_and_no_candidate_is_no_donor() -> None:
    a, b = cand("http://a", 2, 2, 0x1000000), cand("http://b", 2, 2, 0x1000000)
    assert choose_pull_donor([b, a]).donor == b
    assert choose_pull_donor([]).donor is None


def snapshot(wal: bytes, *, chunk: int = 1000, term: int = 7) -> list[bytes]:
    header = SnapshotHeader(NodeId(2), term, START, Lsn(START + len(wal)), b'{"state":1}')
    frames = [encode_header(header)]
    for i in range(0, len(wal), chunk):
        frames.append(encode_wal(Lsn(START + i), wal[i:i + chunk]))
    frames.append(encode_end(term, Lsn(START + len(wal))))
    return frames


@given(st.binary(min_size=0, max_size=5000), st.integers(1, 700))
def test_b2_b5_a_snapshot_decodes_whatever_way_its_bytes_arrive(wal: bytes, cut: int) -> None:
    stream = b"".join(snapshot(wal))
    decoder = SnapshotDecoder()
    frames = []
    for i in range(0, len(stream), cut):
        frames += decoder.feed(stream[i:i + cut])
    header = decoder.finish()
    assert header.end_lsn == START + len(wal)
    assert b"".join(f.data for f in frames if isinstance(f, SnapshotWal)) == wal
    assert isinstance(frames[-1], SnapshotEnd)


def decode(stream: bytes) -> SnapshotHeader:
    decoder = SnapshotDecoder()
    decoder.feed(stream)
    return decoder.finish()


def test_b2_a_flipped_bit_anywhere_fails_the_crc() -> None:
    stream = bytearray(b"".join(snapshot(b"x" * 3000)))
    for pos in (7, 60, len(stream) // 2, len(stream) - 2):
        damaged = bytearray(stream)
        damaged[pos] ^= 0x10
        with pytest.raises(SnapshotInvalid):
            decode(bytes(damaged))


def test_b2_an_oversized_or_unknown_frame_is_refused_before_it_is_buffered() -> None:
    with pytest.raises(SnapshotInvalid, match="over"):
        SnapshotDecoder().feed(b"W" + (1 << 30).to_bytes(4, "big"))
    with pytest.raises(SnapshotInvalid, match="unknown tag"):
        SnapshotDecoder().feed(b"Z\x00\x00\x00\x00")


def test_b4_a_gap_an_overrun_or_a_missing_end_installs_nothing() -> None:
    frames = snapshot(b"y" * 3000)
    with pytest.raises(SnapshotInvalid, match="expected"):
        decode(b"".join(frames[:1] + frames[2:]))  # the first WAL frame lost
    with pytest.raises(SnapshotInvalid, match="ended before"):
        decode(b"".join(frames[:-1]))  # the stream broke before its end frame
    with pytest.raises(SnapshotInvalid, match="runs past"):
        decode(b"".join(frames[:-1]) + encode_wal(Lsn(START + 3000), b"z"))
    with pytest.raises(SnapshotInvalid, match="before the header"):
        decode(b"".join(frames[1:]))


def test_b5_a_term_abort_or_an_end_in_another_term_is_term_changed() -> None:
    frames = snapshot(b"w" * 2000)
    with pytest.raises(PullTermChanged):
        decode(b"".join(frames[:2]) + encode_abort("term", "term 7 became 8"))
    with pytest.raises(PullTermChanged):
        decode(b"".join(frames[:-1]) + encode_end(8, Lsn(START + 2000)))
    with pytest.raises(SnapshotInvalid, match="aborted"):
        decode(b"".join(frames[:2]) + encode_abort("error", "disk"))
