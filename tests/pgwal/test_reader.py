"""WalReader / WalVerifier: round trips, ends of WAL, and single-byte corruptions."""

from __future__ import annotations

import struct
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safekeeper_recovery.core import XLOG_BLCKSZ, Lsn
from safekeeper_recovery.pgwal import (
    Corruption,
    SyntheticWal,
    TornTail,
    WalEnd,
    WalReader,
    WalVerifier,
    continuation_prev_lsn,
    noop_record,
    verify_chunks,
)
from safekeeper_recovery.pgwal._format import (
    RM_XLOG_ID,
    XLOG_SWITCH,
    PageHeader,
    RecordHeader,
    record_crc,
)
from safekeeper_recovery.testing import MiB

from ._support import byte_owners

START = Lsn(0x100_0000)
SYSID = 4242


@cache
def sample() -> tuple[SyntheticWal, bytes, tuple[tuple[str, int, int | None], ...]]:
    """~70 KiB of WAL that crosses a segment boundary (1 MiB segments)."""
    wal = SyntheticWal(11, START - 30_000, 70_000, seg_size=MiB, system_id=SYSID)
    return wal, wal.read(0, wal.size), tuple(byte_owners(wal))


@cache
def header_bytes() -> list[int]:
    return [i for i, o in enumerate(sample()[2]) if o[0] == "page"]


def read_all(data: bytes, wal: SyntheticWal, chunks: list[int] | None = None) -> WalReader:
    reader = WalReader(wal.start_lsn, wal.seg_size, system_id=SYSID, timeline=1)
    pos = 0
    for n in chunks or [len(data)]:
        reader.feed(data[pos : pos + n])
        pos += n
    reader.feed(data[pos:])
    return reader


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 9000), max_size=30))
def test_any_chunking_yields_exactly_the_generated_records(chunks: list[int]) -> None:
    wal, data, _ = sample()
    reader = WalReader(wal.start_lsn, wal.seg_size, system_id=SYSID, timeline=1)
    seen: list[tuple[Lsn, int]] = []
    pos = 0
    for n in [*chunks, len(data)]:
        seen += [(r.lsn, r.header.tot_len) for r in reader.feed(data[pos : pos + n])]
        pos += n
    assert seen == list(wal.record_lsns())
    assert reader.finish() == WalEnd("end of data", wal.end_lsn)
    assert reader.end_lsn == wal.end_lsn
    assert reader.last_record_lsn == wal.last_record_lsn


def test_zeros_after_the_last_record_end_the_wal_cleanly() -> None:
    wal, data, _ = sample()
    reader = read_all(data + bytes(3 * XLOG_BLCKSZ), wal)
    assert reader.finish() == WalEnd("zeros", wal.end_lsn)
    assert reader.corruption is None
    assert reader.end_lsn == wal.end_lsn


def test_zeros_at_a_page_start_end_the_wal_cleanly() -> None:
    wal = SyntheticWal(3, START, 5 * XLOG_BLCKSZ, seg_size=MiB)  # ends on a page boundary
    reader = WalReader(wal.start_lsn, MiB)
    reader.feed(wal.read(0, wal.size) + bytes(XLOG_BLCKSZ))
    assert reader.finish() == WalEnd("zeros", wal.end_lsn)


def test_data_ending_inside_a_record_is_incomplete_not_corrupt() -> None:
    wal, data, owners = sample()
    cut = 40_000
    kind, record, _ = owners[cut]
    assert kind == "record"
    reader = read_all(data[:cut], wal)
    assert reader.finish() == WalEnd("incomplete", wal.start_lsn + cut, Lsn(record))
    assert reader.end_lsn == record


def test_the_verifier_wants_records_to_reach_the_known_end() -> None:
    wal, data, _ = sample()
    assert verify_chunks([data], wal.start_lsn, wal.end_lsn, MiB).ok
    early = verify_chunks([data + bytes(4096)], wal.start_lsn, wal.end_lsn + 4096, MiB)
    assert early.corruption is not None
    assert (early.corruption.kind, early.corruption.lsn) == ("early end", wal.end_lsn)
    missing = verify_chunks([data[:1000]], wal.start_lsn, wal.end_lsn, MiB)
    assert missing.corruption is not None
    assert missing.corruption.kind == "missing data"


def test_an_end_inside_the_last_record_is_a_torn_tail_not_corruption() -> None:
    # A node killed mid-stream (or a flush part-way through a record) stops there: the
    # bytes after the last whole record are a prefix of the next, never written in full.
    wal, data, _ = sample()
    short = verify_chunks([data[:-8]], wal.start_lsn, wal.end_lsn - 8, MiB)
    assert short.ok, short.summary()
    assert short.torn_tail == TornTail(wal.end_lsn - 8, wal.last_record_lsn)
    assert short.valid_end_lsn == wal.last_record_lsn
    assert f"torn tail: the WAL ends at {wal.end_lsn - 8} inside the record at " \
        f"{wal.last_record_lsn}" in short.summary()
    whole = verify_chunks([data], wal.start_lsn, wal.end_lsn, MiB)
    assert whole.torn_tail is None


def test_zeros_inside_a_record_before_the_end_are_still_corruption() -> None:
    wal, data, owners = sample()
    cut = 40_000
    _, record, _ = owners[cut]
    zeroed = data[:cut] + bytes(len(data) - cut)
    report = verify_chunks([zeroed], wal.start_lsn, wal.end_lsn, MiB)
    assert report.corruption is not None
    assert (report.corruption.kind, report.corruption.lsn) == ("incomplete record", record)
    assert report.torn_tail is None


def segment_start_sample() -> tuple[SyntheticWal, bytes, int]:
    """The sample from its segment start at ``START`` on: a 59656-byte record begun 19864
    bytes before it continues over the first six pages."""
    wal, data, _ = sample()
    at = START - wal.start_lsn
    crossing = [(lsn, n) for lsn, n in wal.record_lsns() if lsn < START < lsn + n]
    assert [(int(lsn), n) for lsn, n in crossing] == [(START - 19864, 59656)]
    return wal, data[at:], at


def test_a_leading_continuation_at_a_segment_start_is_skipped_as_pg_waldump_does() -> None:
    wal, data, _ = segment_start_sample()
    expected = [lsn for lsn, _ in wal.record_lsns() if lsn >= START]
    reader = WalReader(START, MiB, system_id=SYSID, timeline=1)
    seen = [r.lsn for r in reader.feed(data)]
    assert reader.finish() == WalEnd("end of data", wal.end_lsn)
    assert seen == expected
    lead = reader.leading_continuation
    assert lead is not None
    # 19864 bytes of LSN space before START hold two 24-byte page headers.
    assert (lead.lsn, lead.length, lead.next_lsn) == (START, 59656 - 19864 + 48, expected[0])
    report = verify_chunks([data[i : i + 777] for i in range(0, len(data), 777)], START,
                           wal.end_lsn, MiB, system_id=SYSID, timeline=1)
    assert report.ok, report.summary()
    assert report.records == len(expected)
    assert f"skipped {lead.length} bytes at {START}" in report.summary()


def test_a_leading_continuation_with_a_wrong_remaining_length_is_corrupt() -> None:
    _, data, _ = segment_start_sample()
    bad = bytearray(data)
    page = XLOG_BLCKSZ  # the second page still continues the record: its xlp_rem_len
    (rem_len,) = struct.unpack_from("<I", bad, page + 16)
    struct.pack_into("<I", bad, page + 16, rem_len + 8)
    reader = WalReader(START, MiB)
    reader.feed(bytes(bad))
    assert reader.corruption is not None
    assert (reader.corruption.kind, reader.corruption.at) == ("continuation", START + page)


def test_a_continuation_is_skipped_only_where_reading_starts() -> None:
    # Past the first page, a page that says it continues a record where none is in
    # progress is still corruption (W1).
    first = SyntheticWal(3, START, 5 * XLOG_BLCKSZ, seg_size=MiB)  # ends on a page start
    page = first.end_lsn
    second = SyntheticWal(4, page, 5 * XLOG_BLCKSZ, seg_size=MiB,
                          prev_lsn=continuation_prev_lsn(page, START))
    data = first.read(0, first.size) + second.read(0, second.size)
    assert verify_chunks([data], START, second.end_lsn, MiB).ok
    bad = bytearray(data)
    at = page - START
    struct.pack_into("<H", bad, at + 2, 0x0001)  # xlp_info: XLP_FIRST_IS_CONTRECORD
    struct.pack_into("<I", bad, at + 16, 8)  # xlp_rem_len
    report = verify_chunks([bytes(bad)], START, second.end_lsn, MiB)
    assert report.corruption is not None
    assert (report.corruption.kind, report.corruption.at) == ("continuation", page)
    assert report.leading_continuation is None


def test_wal_ending_inside_the_leading_continuation_is_a_torn_tail() -> None:
    _, data, _ = segment_start_sample()
    report = verify_chunks([data[:10_000]], START, START + 10_000, MiB)
    assert report.ok, report.summary()
    assert report.records == 0
    assert report.torn_tail == TornTail(START + 10_000, None)


def test_a_broken_prev_link_between_runs_is_found() -> None:
    first = SyntheticWal(1, START, 20_000, seg_size=MiB)
    second = SyntheticWal(2, first.end_lsn, 20_000, seg_size=MiB, prev_lsn=first.end_lsn - 48)
    both = first.read(0, first.size) + second.read(0, second.size)
    report = verify_chunks([both], START, second.end_lsn, MiB)
    assert report.corruption is not None
    assert (report.corruption.kind, report.corruption.lsn) == ("prev link", first.end_lsn)
    assert report.last_record_lsn == first.last_record_lsn


def test_an_xlog_switch_skips_the_rest_of_the_segment() -> None:
    seg = MiB
    start = Lsn(2 * seg)
    head = PageHeader.build(start, seg_size=seg, sysid=1, tli=1, rem_len=0).encode()
    record = bytearray(noop_record(24, Lsn(0), b""))
    record[16] = XLOG_SWITCH  # xl_info
    assert record[17] == RM_XLOG_ID
    struct.pack_into("<I", record, 20, record_crc(record))
    assert RecordHeader.decode(record).is_switch
    junk = b"\x5a" * 5000  # never read: the segment is over
    nxt = SyntheticWal(1, Lsn(3 * seg), 10_000, seg_size=seg, system_id=1,
                       prev_lsn=start + len(head))
    data = head + bytes(record) + junk + bytes(seg - len(head) - 24 - len(junk))
    data += nxt.read(0, nxt.size)
    report = verify_chunks([data], start, nxt.end_lsn, seg)
    assert report.ok, report.summary()
    assert report.records == 1 + len(list(nxt.record_lsns()))


def expected_lsn(owner: tuple[str, int, int | None]) -> int:
    """Where a flip must be reported: the record holding the byte; a page header's own
    LSN between records, or the record it interrupts."""
    kind, lsn, in_progress = owner
    if kind == "page" and in_progress is not None:
        return in_progress
    return lsn


UNCHECKABLE_INFO_BITS = (0x04, 0x08, 0x0C)
"""XLP_BKP_REMOVABLE / XLP_FIRST_IS_OVERWRITE_CONTRECORD: real PostgreSQL WAL sets them
freely and PostgreSQL's reader does not check them, so neither do we."""


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_flipped_byte_is_reported_in_the_record_or_page_holding_it(data: st.DataObject) -> None:
    wal, clean, owners = sample()
    headers = header_bytes()  # ~1% of the bytes: drawn on purpose half of the time
    index = data.draw(
        st.one_of(st.integers(0, len(clean) - 1), st.sampled_from(headers)), label="byte"
    )
    mask = data.draw(st.integers(1, 255), label="xor")
    owner = owners[index]
    lsn = int(wal.start_lsn) + index
    if owner[0] == "page" and lsn - owner[1] == 2 and mask in UNCHECKABLE_INFO_BITS:
        return
    bad = bytearray(clean)
    bad[index] ^= mask
    chunk = data.draw(st.sampled_from([len(bad), 8192, 777]), label="chunk")
    report = verify_chunks(
        [bytes(bad[i : i + chunk]) for i in range(0, len(bad), chunk)],
        wal.start_lsn, wal.end_lsn, MiB, system_id=SYSID, timeline=1,
    )
    assert report.corruption is not None, (Lsn(lsn), owner)
    assert report.corruption.lsn == expected_lsn(owner), (str(report.corruption), owner)
    assert report.corruption.at >= report.corruption.lsn
    assert report.valid_end_lsn <= report.corruption.lsn


def test_a_corruption_names_the_record_and_what_is_wrong() -> None:
    wal, clean, owners = sample()
    index = next(i for i, o in enumerate(owners) if o[0] == "record" and i > 20_000) + 100
    bad = bytearray(clean)
    bad[index] ^= 0x01
    report = verify_chunks([bytes(bad)], wal.start_lsn, wal.end_lsn, MiB)
    assert isinstance(report.corruption, Corruption)
    record = owners[index][1]
    assert report.corruption.kind == "crc"
    assert report.corruption.lsn == record
    assert f"CORRUPT at {Lsn(record)}" in report.summary()


def test_the_reader_refuses_an_unaligned_start() -> None:
    with pytest.raises(ValueError, match="record boundary"):
        WalReader(START + 3, MiB)
    with pytest.raises(ValueError, match="before start"):
        WalVerifier(START, START - 8, MiB)
