"""PostgreSQL 15 WAL: the on-disk format, a synthetic WAL generator and a streaming verifier.

Pure code (no trio, no I/O): ``SyntheticWal`` writes well-formed WAL of XLOG_NOOP records
(``continue_synthetic``: a run that continues earlier runs wherever they were cut);
``WalReader`` checks WAL fed to it in order, record by record; ``WalVerifier`` /
``verify_chunks`` judge a stretch whose end is known (a node's flush_lsn).
"""

from ._continuation import CLEAN_STEP, ContinuedWal, continue_synthetic
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
from ._reader import (
    MAX_RECORD_SIZE,
    Corruption,
    EndReason,
    LeadingContinuation,
    WalEnd,
    WalReader,
    WalRecord,
)
from ._synthetic import (
    DEFAULT_SYSTEM_ID,
    TRAILER_SIZE,
    SyntheticWal,
    check_start_lsn,
    continuation_prev_lsn,
    validate_seg_size,
)
from ._verify import TornTail, VerifyReport, WalVerifier, verify_chunks

__all__ = [
    "CLEAN_STEP",
    "DEFAULT_SYSTEM_ID",
    "LONG_PAGE_HEADER_SIZE",
    "MAX_RECORD_SIZE",
    "PG15_PAGE_MAGIC",
    "RECORD_HEADER_SIZE",
    "SHORT_PAGE_HEADER_SIZE",
    "TRAILER_SIZE",
    "ContinuedWal",
    "Corruption",
    "EndReason",
    "LeadingContinuation",
    "PageHeader",
    "RecordHeader",
    "SyntheticWal",
    "TornTail",
    "VerifyReport",
    "WalEnd",
    "WalReader",
    "WalRecord",
    "WalVerifier",
    "check_start_lsn",
    "continue_synthetic",
    "continuation_prev_lsn",
    "noop_record",
    "record_crc",
    "validate_seg_size",
    "verify_chunks",
]
