"""PostgreSQL 15 WAL structs and CRC32C, checked against the C layout byte by byte."""

from __future__ import annotations

import struct

import crc32c
import pytest

from safekeeper_recovery.core import Lsn
from safekeeper_recovery.pgwal import PageHeader, RecordHeader, noop_record, record_crc
from safekeeper_recovery.pgwal._format import maxalign, page_header_size
from safekeeper_recovery.testing import MiB


def test_crc32c_is_the_castagnoli_polynomial() -> None:
    assert crc32c.crc32c(b"123456789") == 0xE3069283  # the standard check value


def test_short_page_header_layout() -> None:
    hdr = PageHeader.build(0x1002000, seg_size=16 * MiB, sysid=99, tli=1, rem_len=300)
    raw = hdr.encode()
    # u16 magic, u16 info, u32 tli, u64 pageaddr, u32 rem_len, 4 bytes padding
    assert raw == struct.pack("<HHIQI", 0xD110, 0x0001, 1, 0x1002000, 300) + b"\0" * 4
    assert len(raw) == 24
    assert PageHeader.decode(raw) == hdr


def test_long_page_header_on_a_segment_start() -> None:
    hdr = PageHeader.build(0x2000000, seg_size=16 * MiB, sysid=0x0123456789ABCDEF, tli=1,
                           rem_len=0)
    raw = hdr.encode()
    assert raw[:24] == struct.pack("<HHIQI", 0xD110, 0x0002, 1, 0x2000000, 0) + b"\0" * 4
    assert raw[24:] == struct.pack("<QII", 0x0123456789ABCDEF, 16 * MiB, 8192)
    assert len(raw) == 40
    assert PageHeader.decode(raw) == hdr
    assert page_header_size(0x2000000, 16 * MiB) == 40
    assert page_header_size(0x2002000, 16 * MiB) == 24
    assert page_header_size(0x2100000, MiB) == 40


def test_record_header_layout() -> None:
    hdr = RecordHeader(tot_len=50, xid=7, prev=Lsn(0x1000028), info=0x20, rmid=0, crc=0xDEADBEEF)
    raw = hdr.encode()
    assert raw == struct.pack("<IIQBBxxI", 50, 7, 0x1000028, 0x20, 0, 0xDEADBEEF)
    assert RecordHeader.decode(raw) == hdr


def test_record_crc_covers_the_body_then_the_header_before_xl_crc() -> None:
    record = noop_record(100, Lsn(0x1000028), bytes(range(100)))
    stored = struct.unpack_from("<I", record, 20)[0]
    # PostgreSQL: COMP_CRC32C(body); COMP_CRC32C(header up to xl_crc) - one running CRC.
    assert stored == crc32c.crc32c(record[24:] + record[:20])
    assert record_crc(record) == stored
    damaged = record[:30] + bytes([record[30] ^ 1]) + record[31:]
    assert record_crc(damaged) != stored


@pytest.mark.parametrize(
    ("tot_len", "body_prefix"),
    [(24, b""), (26, b"\xff\x00"), (281, b"\xff\xff"), (285, b"\xfe\x00\x01\x00\x00")],
)
def test_noop_main_data_encodings(tot_len: int, body_prefix: bytes) -> None:
    record = noop_record(tot_len, Lsn(0), b"x" * tot_len)
    assert len(record) == tot_len
    hdr = RecordHeader.decode(record)
    assert (hdr.tot_len, hdr.rmid, hdr.info, hdr.xid) == (tot_len, 0, 0x20, 0)
    assert record[24:].startswith(body_prefix)


@pytest.mark.parametrize("tot_len", [0, 23, 25, 282, 283, 284])
def test_lengths_no_noop_record_can_have_are_refused(tot_len: int) -> None:
    with pytest.raises(ValueError, match="no XLOG_NOOP record"):
        noop_record(tot_len, Lsn(0), b"x" * 300)


def test_every_maxaligned_gap_fits_exactly_one_record() -> None:
    for size in range(24, 4096, 8):
        assert len(noop_record(size, Lsn(0), b"y" * size)) == size
    assert [maxalign(n) for n in (0, 1, 8, 9, 24, 25)] == [0, 8, 8, 16, 24, 32]
