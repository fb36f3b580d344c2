"""PostgreSQL 15 WAL: the on-disk format, a synthetic WAL generator and a streaming verifier.

Pure code (no trio, no I/O): ``SyntheticWal`` writes well-formed WAL of XLOG_NOOP records;
``WalReader`` checks WAL fed to it in order, record by record.
"""

from ._format import (
    LONG_PAGE_HEADER_SIZE,
    PG15_PAGE_MAGIC,
    RECORD_HEADER_SIZE,
    SHORT_PAGE_HEADER_SIZE,
    PageHeader,
    RecordHeader,
    noop_record,
    record_crc,
)
from ._synthetic import (
    DEFAULT_SYSTEM_ID,
    TRAILER_SIZE,
    SyntheticWal,
    continuation_prev_lsn,
    validate_seg_size,
)

__all__ = [
    "DEFAULT_SYSTEM_ID",
    "LONG_PAGE_HEADER_SIZE",
    "PG15_PAGE_MAGIC",
    "RECORD_HEADER_SIZE",
    "SHORT_PAGE_HEADER_SIZE",
    "TRAILER_SIZE",
    "PageHeader",
    "RecordHeader",
    "SyntheticWal",
    "continuation_prev_lsn",
    "noop_record",
    "record_crc",
    "validate_seg_size",
]
