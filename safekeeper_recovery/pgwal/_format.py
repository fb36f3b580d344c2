"""PostgreSQL 15 WAL on-disk format: page headers, record headers, CRC32C (pure).

The layout is PostgreSQL's ``access/xlog_internal.h`` and ``access/xlogrecord.h`` for a
little-endian build with 8 KiB WAL pages (``XLOG_BLCKSZ``) and 8-byte MAXALIGN::

    XLogPageHeaderData (24 bytes, 4 trailing padding bytes)
      0 u16 xlp_magic (0xD110 = PostgreSQL 15)   2 u16 xlp_info
      4 u32 xlp_tli                              8 u64 xlp_pageaddr (LSN of the page)
     16 u32 xlp_rem_len (bytes of a record continued from the previous page)
    XLogLongPageHeaderData (40 bytes; the first page of every segment)
      0 XLogPageHeaderData                      24 u64 xlp_sysid
     32 u32 xlp_seg_size                        36 u32 xlp_xlog_blcksz
    XLogRecord (24 bytes, then xl_tot_len - 24 bytes of body; records start MAXALIGNed)
      0 u32 xl_tot_len   4 u32 xl_xid   8 u64 xl_prev (start of the previous record)
     16 u8 xl_info      17 u8 xl_rmid  18 2 padding bytes  20 u32 xl_crc

``xl_crc`` is CRC32C over the body, then over the header's first 20 bytes (PostgreSQL's
order). An XLOG_NOOP record (rmgr 0, info 0x20) carries only "main data": block id 255
(``XLR_BLOCK_ID_DATA_SHORT``) + a u8 length, or 254 (``XLR_BLOCK_ID_DATA_LONG``) + a u32
length, then the data.
"""

from __future__ import annotations

import struct
from typing import Final, final

import attrs
import crc32c as _crc32c

from ..core import XLOG_BLCKSZ, Lsn

__all__ = [
    "LONG_PAGE_HEADER_SIZE",
    "MAXALIGN",
    "MIN_RECORD_SIZE",
    "PG15_PAGE_MAGIC",
    "RECORD_HEADER_SIZE",
    "RM_XLOG_ID",
    "SHORT_PAGE_HEADER_SIZE",
    "XLOG_BLCKSZ",
    "XLOG_NOOP",
    "XLOG_SWITCH",
    "XLP_ALL_FLAGS",
    "XLP_BKP_REMOVABLE",
    "XLP_FIRST_IS_CONTRECORD",
    "XLP_FIRST_IS_OVERWRITE_CONTRECORD",
    "XLP_LONG_HEADER",
    "PageHeader",
    "RecordHeader",
    "maxalign",
    "noop_record",
    "page_header_size",
    "record_crc",
]

PG15_PAGE_MAGIC: Final = 0xD110
XLP_FIRST_IS_CONTRECORD: Final = 0x0001
XLP_LONG_HEADER: Final = 0x0002
XLP_BKP_REMOVABLE: Final = 0x0004
XLP_FIRST_IS_OVERWRITE_CONTRECORD: Final = 0x0008
XLP_ALL_FLAGS: Final = 0x000F
SHORT_PAGE_HEADER_SIZE: Final = 24
LONG_PAGE_HEADER_SIZE: Final = 40
RECORD_HEADER_SIZE: Final = 24
MIN_RECORD_SIZE: Final = RECORD_HEADER_SIZE
MAXALIGN: Final = 8
RM_XLOG_ID: Final = 0
XLOG_NOOP: Final = 0x20
XLOG_SWITCH: Final = 0x40
XLR_INFO_MASK: Final = 0x0F
XLR_BLOCK_ID_DATA_SHORT: Final = 255
XLR_BLOCK_ID_DATA_LONG: Final = 254

_SHORT: Final = struct.Struct("<HHIQI4x")
_LONG_TAIL: Final = struct.Struct("<QII")
_RECORD: Final = struct.Struct("<IIQBB2xI")
_CRC_OFFSET: Final = 20


def maxalign(n: int) -> int:
    """``n`` rounded up to a multiple of 8 (PostgreSQL's MAXALIGN)."""
    return (n + MAXALIGN - 1) & ~(MAXALIGN - 1)


def page_header_size(page_lsn: int, seg_size: int) -> int:
    """Header size of the page starting at ``page_lsn``: long on a segment's first page."""
    return LONG_PAGE_HEADER_SIZE if page_lsn % seg_size == 0 else SHORT_PAGE_HEADER_SIZE


@final
@attrs.frozen
class PageHeader:
    """One WAL page header; ``sysid``/``seg_size``/``blcksz`` only in a long one."""

    magic: int
    info: int
    tli: int
    pageaddr: Lsn
    rem_len: int
    padding: bytes = b"\0\0\0\0"
    sysid: int | None = None
    seg_size: int | None = None
    blcksz: int | None = None

    @property
    def is_long(self) -> bool:
        return self.sysid is not None

    @property
    def size(self) -> int:
        return LONG_PAGE_HEADER_SIZE if self.is_long else SHORT_PAGE_HEADER_SIZE

    def encode(self) -> bytes:
        short = _SHORT.pack(self.magic, self.info, self.tli, int(self.pageaddr), self.rem_len)
        if self.sysid is None:
            return short
        assert self.seg_size is not None, "a long header has a segment size"
        assert self.blcksz is not None, "a long header has a block size"
        return short + _LONG_TAIL.pack(self.sysid, self.seg_size, self.blcksz)

    @classmethod
    def build(
        cls, page_lsn: int, *, seg_size: int, sysid: int, tli: int, rem_len: int
    ) -> PageHeader:
        """The header PostgreSQL writes for the page at ``page_lsn`` (long at a segment
        start; XLP_FIRST_IS_CONTRECORD when ``rem_len`` bytes of a record continue here)."""
        info = XLP_FIRST_IS_CONTRECORD if rem_len else 0
        if page_lsn % seg_size == 0:
            return cls(
                PG15_PAGE_MAGIC, info | XLP_LONG_HEADER, tli, Lsn(page_lsn), rem_len,
                sysid=sysid, seg_size=seg_size, blcksz=XLOG_BLCKSZ,
            )
        return cls(PG15_PAGE_MAGIC, info, tli, Lsn(page_lsn), rem_len)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> PageHeader:
        """Parse 24 bytes, or 40 when the XLP_LONG_HEADER bit is set (``ValueError`` when
        ``data`` is too short for what the info bits announce)."""
        if len(data) < SHORT_PAGE_HEADER_SIZE:
            raise ValueError(f"page header needs 24 bytes, got {len(data)}")
        magic, info, tli, pageaddr, rem_len = _SHORT.unpack_from(data)
        padding = bytes(data[20:24])
        if not info & XLP_LONG_HEADER:
            return cls(magic, info, tli, Lsn(pageaddr), rem_len, padding)
        if len(data) < LONG_PAGE_HEADER_SIZE:
            raise ValueError(f"long page header needs 40 bytes, got {len(data)}")
        sysid, seg_size, blcksz = _LONG_TAIL.unpack_from(data, SHORT_PAGE_HEADER_SIZE)
        return cls(magic, info, tli, Lsn(pageaddr), rem_len, padding, sysid, seg_size, blcksz)


@final
@attrs.frozen
class RecordHeader:
    """An ``XLogRecord`` header (the 24 bytes before a record's body)."""

    tot_len: int
    xid: int
    prev: Lsn
    info: int
    rmid: int
    crc: int
    padding: bytes = b"\0\0"

    def encode(self) -> bytes:
        raw = _RECORD.pack(self.tot_len, self.xid, int(self.prev), self.info, self.rmid, self.crc)
        return raw[:18] + self.padding + raw[20:]

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> RecordHeader:
        if len(data) < RECORD_HEADER_SIZE:
            raise ValueError(f"record header needs 24 bytes, got {len(data)}")
        tot_len, xid, prev, info, rmid, crc = _RECORD.unpack_from(data)
        return cls(tot_len, xid, Lsn(prev), info, rmid, crc, bytes(data[18:20]))

    @property
    def is_switch(self) -> bool:
        """An XLOG_SWITCH record: the rest of its segment is unused."""
        return self.rmid == RM_XLOG_ID and self.info & ~XLR_INFO_MASK == XLOG_SWITCH


def record_crc(record: bytes | bytearray | memoryview) -> int:
    """CRC32C of a whole record (header + body) as PostgreSQL computes ``xl_crc``: the body
    first, then the header up to ``xl_crc``."""
    crc = _crc32c.crc32c(record[RECORD_HEADER_SIZE:])
    return int(_crc32c.crc32c(record[:_CRC_OFFSET], crc))


def noop_record(tot_len: int, prev: Lsn, fill: bytes) -> bytes:
    """A complete XLOG_NOOP record of exactly ``tot_len`` bytes, unpadded, its main data
    taken from the start of ``fill``. Lengths: 24 (no data), 26..281 (short data), 285 and
    up (long data); the others (25, 282..284) raise ``ValueError``. Every multiple of 8
    from 24 up is a valid length, so any MAXALIGNed gap of 24 bytes or more can be filled
    by exactly one record."""
    if tot_len == RECORD_HEADER_SIZE:
        body = b""
    elif RECORD_HEADER_SIZE + 2 <= tot_len <= RECORD_HEADER_SIZE + 2 + 255:
        n = tot_len - RECORD_HEADER_SIZE - 2
        body = bytes((XLR_BLOCK_ID_DATA_SHORT, n)) + fill[:n]
    elif tot_len >= RECORD_HEADER_SIZE + 5 + 256:
        n = tot_len - RECORD_HEADER_SIZE - 5
        body = bytes((XLR_BLOCK_ID_DATA_LONG,)) + n.to_bytes(4, "little") + fill[:n]
    else:
        raise ValueError(f"no XLOG_NOOP record is {tot_len} bytes long")
    if len(body) != tot_len - RECORD_HEADER_SIZE:
        raise ValueError(f"fill of {len(fill)} bytes is too short for a {tot_len}-byte record")
    header = RecordHeader(tot_len, 0, prev, XLOG_NOOP, RM_XLOG_ID, 0).encode()
    crc = record_crc(header + body)
    return header[:_CRC_OFFSET] + crc.to_bytes(4, "little") + body
