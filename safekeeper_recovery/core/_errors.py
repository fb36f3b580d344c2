"""The project's one error hierarchy.

::

    SafekeeperError                      root of everything we raise on purpose
    ├── LocalProtocolError               we were asked to do something the protocol forbids
    │   └── CommonPointError             find_highest_common_point preconditions (corruption)
    ├── RemoteProtocolError              a peer sent something malformed (close-code hint)
    ├── StreamStopped                    a WAL stream cannot go on (its close code says why)
    │   ├── StreamTermChanged            the term moved (4000)
    │   ├── WalRemoved                   the WAL asked for is gone (4001)
    │   └── ArchivedWalUnreadable        removed here, and the archive cannot serve it (4011)
    ├── AcceptorError                    the acceptor refused a message (non-fatal, reconnect)
    ├── FatalTimelineError               the timeline must stop (e.g. truncating committed WAL)
    ├── StorageError                     durable storage failed or is inconsistent
    │   ├── CorruptionError              a checksum or layout check failed at load
    │   └── ArchiveError                 the WAL archive failed (``kind`` labels metrics)
    │       ├── ArchiveObjectMissing     no such object in the archive
    │       └── ArchiveCorrupted         an object failed its size or checksum check
    ├── DiskUsageExceeded                the disk is past --max-disk-usage: WAL refused (4012)
    ├── AuthError                        missing / invalid credentials (401) or scope (403)
    ├── PullError                        pulling a timeline from a peer failed
    │   ├── PullInProgress               the timeline is already being pulled (409)
    │   ├── NoPullDonor                  no listed peer answered with the timeline
    │   ├── PullTermChanged              the donor's term moved during the snapshot: redo
    │   └── SnapshotInvalid              a snapshot piece failed its CRC or validation
    └── RecoveryError                    one recovery attempt ended without success
        ├── TermChanged                  our or the donor's term moved during the attempt
        ├── NoCommonPoint                donor and local histories share no term
        ├── DonorUnavailable             HTTP/WebSocket/timeouts talking to the donor
        │   └── DonorBusy                the donor runs its most recovery senders: try another
        └── ProposerArrived              a proposer connected to this node: recovery yields

Every error says whether retrying can mend it (``permanent``) and, if it crosses the wire,
its WebSocket close code (``close_code``): callers decide by type and attribute, never by
matching text. Names follow httpx: *local* errors are our own misuse, *remote* errors are
the peer's fault.
"""

from __future__ import annotations

__all__ = [
    "AcceptorError",
    "ArchiveCorrupted",
    "ArchiveError",
    "ArchiveObjectMissing",
    "ArchivedWalUnreadable",
    "AuthError",
    "CommonPointError",
    "CorruptionError",
    "DiskUsageExceeded",
    "DonorBusy",
    "DonorUnavailable",
    "FatalTimelineError",
    "LocalProtocolError",
    "NoCommonPoint",
    "NoPullDonor",
    "ProposerArrived",
    "PullError",
    "PullInProgress",
    "PullTermChanged",
    "RecoveryError",
    "RemoteProtocolError",
    "SafekeeperError",
    "SnapshotInvalid",
    "StorageError",
    "StreamStopped",
    "StreamTermChanged",
    "TermChanged",
    "WalRemoved",
]

# WebSocket close codes (RFC 6455) used as hints by RemoteProtocolError.
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INTERNAL_ERROR = 1011


class SafekeeperError(Exception):
    """Root of every error this package raises deliberately.

    Two facts every error can state, so a caller decides by type and attribute, never by
    parsing text: ``permanent`` (retrying cannot mend it: a refused token, an unknown or
    deleted timeline; a client gives that node up) and ``close_code`` (the WebSocket close
    code it travelled as, or travels as, when it crossed or crosses the wire)."""

    permanent: bool = False
    close_code: int | None = None


class LocalProtocolError(SafekeeperError):
    """We (the local side) attempted something the protocol forbids."""


class CommonPointError(LocalProtocolError):
    """A precondition of ``find_highest_common_point`` failed: histories are corrupt."""


class RemoteProtocolError(SafekeeperError):
    """The remote side sent something malformed, oversized or out of order.

    ``close_code`` is the WebSocket close code a server should answer with (wsproto style).
    """

    def __init__(self, message: str, *, close_code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.close_code = close_code


class StreamStopped(SafekeeperError):
    """A WAL stream (the sender's side) cannot go on. ``close_code`` is the WebSocket close
    code it ends with, one per outcome, so a reader tells them apart by type, not by text."""

    close_code: int | None = 4000


class StreamTermChanged(StreamStopped):
    """The sender's timeline is no longer in the term the stream was asked for (the
    recovery stream's term check)."""

    close_code: int | None = 4000


class WalRemoved(StreamStopped):
    """The WAL the stream needs is no longer on this node (below its local start)."""

    close_code: int | None = 4001


class ArchivedWalUnreadable(StreamStopped):
    """The WAL the stream needs was removed from this node and its archive copy cannot be
    served: the object is missing, fails its size or SHA-256 check, or the archive does not
    answer. Nothing of that segment was sent. ``kind`` is the archive error's kind
    (``missing``, ``corrupt``, ``unreachable``, …)."""

    close_code: int | None = 4011

    def __init__(self, message: str, *, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


class AcceptorError(SafekeeperError):
    """The acceptor refused a message; the sender should re-run its handshake."""


class FatalTimelineError(SafekeeperError):
    """The timeline must stop serving (e.g. a truncation below commit_lsn was requested)."""


class StorageError(SafekeeperError):
    """Durable storage failed (I/O error, full disk) or refused an operation."""


class CorruptionError(StorageError):
    """On-disk data failed verification (bad checksum, bad magic, impossible layout)."""


class ArchiveError(StorageError):
    """The WAL archive (a directory or an S3 bucket) failed or refused an operation.

    ``kind`` is a short, low-cardinality label for metrics and status: ``unreachable``,
    ``timeout`` (no answer in time), ``auth`` (credentials refused), ``no_bucket``,
    ``missing``, ``corrupt``, ``server`` (a 5xx), ``io`` or ``error``.
    """

    def __init__(self, message: str, *, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


class ArchiveObjectMissing(ArchiveError):
    """The archive has no object under the key asked for."""

    permanent = True

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="missing")


class ArchiveCorrupted(ArchiveError):
    """An archive object failed verification (size or SHA-256 differs from what was
    recorded at upload, or its checksum record is missing): it is never served as WAL."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="corrupt")


class DiskUsageExceeded(SafekeeperError):
    """The node's disk is past ``--max-disk-usage`` (rules U1-U4, ``core/_disk_guard.py``):
    an append carrying WAL was refused and nothing of it was written. It passes by itself
    once space is freed (WAL removal, an operator), so it is not ``permanent``."""

    close_code: int | None = 4012


class AuthError(SafekeeperError):
    """Authentication failed. ``status`` is 401 (no/invalid token) or 403 (wrong scope)."""

    permanent = True

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class PullError(SafekeeperError):
    """Pulling a timeline from a peer (bootstrap) failed. ``outcome`` names it for
    metrics and the ``pull`` status."""

    outcome = "error"


class PullInProgress(PullError):
    """A pull of this timeline already runs on this node (a second one is refused)."""

    outcome = "in_progress"


class NoPullDonor(PullError):
    """None of the peers asked has the timeline (or none answered)."""

    outcome = "no_donor"


class PullTermChanged(PullError):
    """The donor's term moved while it streamed the snapshot: the snapshot may not match
    the donor's WAL any more and is discarded; the pull is redone."""

    outcome = "term_changed"


class SnapshotInvalid(PullError):
    """A piece of a snapshot failed its CRC32C or a consistency check (gap, overrun,
    wrong timeline, truncated stream): nothing of it is installed."""

    outcome = "invalid"


class RecoveryError(SafekeeperError):
    """One peer-recovery attempt ended without success. ``outcome`` names it for metrics."""

    outcome = "error"


class TermChanged(RecoveryError):
    """Our term or the donor's term changed during the attempt."""

    outcome = "term_changed"


class NoCommonPoint(RecoveryError):
    """The donor's and our term histories share no term."""

    outcome = "no_common_point"


class DonorUnavailable(RecoveryError):
    """The donor could not be reached, timed out, or closed the stream with an error."""

    outcome = "donor_error"


class DonorBusy(DonorUnavailable):
    """The donor refused the stream: it already serves its cap of recovering peers
    (``--recovery-max-senders``). Try another donor, or back off and retry."""

    outcome = "donor_busy"


class ProposerArrived(RecoveryError):
    """A proposer connected to this node (greeted it, voted, or streams); recovery yields."""

    outcome = "proposer_arrived"

