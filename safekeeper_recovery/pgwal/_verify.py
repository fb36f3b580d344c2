"""Verify a stretch of WAL whose end is known: records must reach exactly that end (pure).

:class:`WalVerifier` wraps a :class:`~._reader.WalReader` with the expected end (a node's
flush_lsn). The WAL is valid when every record checks out and the last one ends exactly
at the end. Anything else is a :class:`~._reader.Corruption`: what the reader found, or

* ``early end``: the records stop (zeros where a record should start) before the end;
* ``incomplete record``: the end falls inside a record (or the data stops inside one);
* ``missing data``: the source delivered less than ``start .. end``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import final

import attrs

from ..core import Lsn
from ._reader import Corruption, WalEnd, WalReader

__all__ = ["VerifyReport", "WalVerifier", "verify_chunks"]


@final
@attrs.frozen
class VerifyReport:
    """The outcome of verifying ``start_lsn .. end_lsn``."""

    start_lsn: Lsn
    end_lsn: Lsn
    records: int
    last_record_lsn: Lsn | None
    """Start of the last valid record (``None``: no valid record)."""
    valid_end_lsn: Lsn
    """Where the valid records end (== ``end_lsn`` when ``ok``)."""
    corruption: Corruption | None

    @property
    def ok(self) -> bool:
        return self.corruption is None

    def summary(self) -> str:
        """One line for humans."""
        span = f"{self.start_lsn}..{self.end_lsn}"
        last = f"last valid record at {self.last_record_lsn}" if self.last_record_lsn else (
            "no valid record"
        )
        if self.corruption is None:
            return f"WAL {span} is valid: {self.records} records, {last}"
        return (
            f"WAL {span} is CORRUPT at {self.corruption.lsn}: {self.corruption}; "
            f"{self.records} valid records before it, {last}, valid up to {self.valid_end_lsn}"
        )


@final
class WalVerifier:
    """Feed WAL ``start_lsn .. end_lsn`` in order, then :meth:`finish`.

    Keyword arguments are the reader's (``system_id``, ``timeline``, ``prev_lsn``).
    :meth:`feed` returns ``False`` once the outcome is settled (a corruption or the end of
    the records), so a caller can stop reading early.
    """

    def __init__(
        self,
        start_lsn: Lsn,
        end_lsn: Lsn,
        seg_size: int,
        *,
        system_id: int | None = None,
        timeline: int | None = None,
        prev_lsn: Lsn | None = None,
    ) -> None:
        if end_lsn < start_lsn:
            raise ValueError(f"end {end_lsn} is before start {start_lsn}")
        self.start_lsn = Lsn(start_lsn)
        self.end_lsn = Lsn(end_lsn)
        self.reader = WalReader(
            start_lsn, seg_size, system_id=system_id, timeline=timeline, prev_lsn=prev_lsn
        )
        self.bytes_fed = 0

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Check the next bytes; ``False`` when more data cannot change the outcome."""
        room = self.end_lsn - self.start_lsn - self.bytes_fed
        if len(data) > room:
            data = memoryview(data)[:room]
        self.bytes_fed += len(data)
        self.reader.feed(data)
        return not self.reader.stopped

    def finish(self) -> VerifyReport:
        """The report, once the data is fed (or reading stopped early)."""
        reader = self.reader
        outcome = reader.finish()
        corruption = outcome if isinstance(outcome, Corruption) else self._judge_end(outcome)
        return VerifyReport(
            self.start_lsn,
            self.end_lsn,
            reader.records,
            reader.last_record_lsn,
            reader.end_lsn,
            corruption,
        )

    def _judge_end(self, end: WalEnd) -> Corruption | None:
        reader, expected = self.reader, self.end_lsn
        fed_to = self.start_lsn + self.bytes_fed
        if fed_to < expected and end.reason != "zeros":
            return Corruption(
                reader.end_lsn, fed_to, "missing data",
                f"the WAL source stopped at {fed_to}, before the end {expected}",
            )
        if end.reason == "end of data":
            if reader.end_lsn >= expected:  # beyond it only inside the padding / a switch
                return None
            return Corruption(
                reader.end_lsn, end.lsn, "incomplete record",
                f"the WAL ends at {expected}, past the last record's end {reader.end_lsn}",
            )
        if end.record_lsn is not None:
            where = f"zeros at {end.lsn}" if end.reason == "zeros" else (
                f"the WAL ends at {expected}"
            )
            return Corruption(
                end.record_lsn, end.lsn, "incomplete record",
                f"{where} inside the record at {end.record_lsn}",
            )
        return Corruption(
            reader.end_lsn, end.lsn, "early end",
            f"the records end at {reader.end_lsn} (zeros at {end.lsn}) but the WAL goes on "
            f"to {expected}",
        )


def verify_chunks(
    chunks: Iterable[bytes],
    start_lsn: Lsn,
    end_lsn: Lsn,
    seg_size: int,
    *,
    system_id: int | None = None,
    timeline: int | None = None,
    prev_lsn: Lsn | None = None,
) -> VerifyReport:
    """Verify ``start_lsn .. end_lsn`` given as consecutive byte chunks (stops reading as
    soon as the outcome is settled)."""
    verifier = WalVerifier(
        start_lsn, end_lsn, seg_size, system_id=system_id, timeline=timeline, prev_lsn=prev_lsn
    )
    for chunk in chunks:
        if not verifier.feed(chunk):
            break
    return verifier.finish()
