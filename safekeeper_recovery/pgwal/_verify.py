"""Verify a stretch of WAL whose end is known: records must reach that end (pure).

:class:`WalVerifier` wraps a :class:`~._reader.WalReader` with the expected end (a node's
flush_lsn). The WAL is valid when every record checks out and the records reach the end:
the last one ends exactly there, or the end falls inside the record after it (a *torn
tail*: the WAL was flushed, or the node stopped, part-way through a record, so the bytes
after the last whole record are a prefix of the next one; ``VerifyReport.torn_tail``).
A leading continuation (a record begun before the start, reader rule W5) is skipped and
reported (``VerifyReport.leading_continuation``). Anything else is a
:class:`~._reader.Corruption`: what the reader found, or

* ``early end``: the records stop (zeros where a record should start) before the end;
* ``incomplete record``: zeros inside a record before the end;
* ``missing data``: the source delivered less than ``start .. end``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import final

import attrs

from ..core import Lsn
from ._reader import Corruption, LeadingContinuation, WalEnd, WalReader

__all__ = ["TornTail", "VerifyReport", "WalVerifier", "verify_chunks"]


@final
@attrs.frozen
class TornTail:
    """The WAL ends at ``lsn``, part-way through the record at ``record_lsn`` (``None``:
    in a page header or the leading continuation, before any record of its own)."""

    lsn: Lsn
    record_lsn: Lsn | None


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
    leading_continuation: LeadingContinuation | None = None
    """A record begun before ``start_lsn`` whose tail was skipped (reader rule W5)."""
    torn_tail: TornTail | None = None
    """Set when the end falls inside a record (valid: the rest was never written)."""

    @property
    def ok(self) -> bool:
        return self.corruption is None

    def summary(self) -> str:
        """One line for humans."""
        span = f"{self.start_lsn}..{self.end_lsn}"
        last = f"last valid record at {self.last_record_lsn}" if self.last_record_lsn else (
            "no valid record"
        )
        skipped = ""
        if (lead := self.leading_continuation) is not None:
            skipped = (
                f"; skipped {lead.length} bytes at {lead.lsn} continuing a record from before "
                f"the start (the first record is at {lead.next_lsn})"
            )
        if self.corruption is None:
            tail = ""
            if (torn := self.torn_tail) is not None:
                inside = f"the record at {torn.record_lsn}" if torn.record_lsn else (
                    "a page header or the leading continuation"
                )
                tail = (
                    f"; torn tail: the WAL ends at {torn.lsn} inside {inside}, after the "
                    f"last whole record's end {self.valid_end_lsn} (the rest is not here "
                    "yet, or never came: not corruption)"
                )
            return f"WAL {span} is valid: {self.records} records, {last}{skipped}{tail}"
        return (
            f"WAL {span} is CORRUPT at {self.corruption.lsn}: {self.corruption}; "
            f"{self.records} valid records before it, {last}, valid up to "
            f"{self.valid_end_lsn}{skipped}"
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
        torn: TornTail | None = None
        if isinstance(outcome, Corruption):
            corruption: Corruption | None = outcome
        else:
            corruption, torn = self._judge_end(outcome)
        return VerifyReport(
            self.start_lsn,
            self.end_lsn,
            reader.records,
            reader.last_record_lsn,
            reader.end_lsn,
            corruption,
            reader.leading_continuation,
            torn,
        )

    def _judge_end(self, end: WalEnd) -> tuple[Corruption | None, TornTail | None]:
        """The corruption an end of the records means, or the torn tail it is."""
        reader, expected = self.reader, self.end_lsn
        fed_to = self.start_lsn + self.bytes_fed
        if fed_to < expected and end.reason != "zeros":
            return Corruption(
                reader.end_lsn, fed_to, "missing data",
                f"the WAL source stopped at {fed_to}, before the end {expected}",
            ), None
        if end.reason == "end of data":
            if reader.end_lsn >= expected:  # beyond it only inside the padding / a switch
                return None, None
            # The data ends right after a page header: the next record has no byte yet.
            return None, TornTail(end.lsn, None)
        if end.reason == "incomplete":  # the data, all of it, ends inside a record
            return None, TornTail(end.lsn, end.record_lsn)
        if end.record_lsn is not None:
            return Corruption(
                end.record_lsn, end.lsn, "incomplete record",
                f"zeros at {end.lsn} inside the record at {end.record_lsn}, before the "
                f"end {expected}",
            ), None
        return Corruption(
            reader.end_lsn, end.lsn, "early end",
            f"the records end at {reader.end_lsn} (zeros at {end.lsn}) but the WAL goes on "
            f"to {expected}",
        ), None


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
