"""``PgError``: an ErrorResponse to send, with its SQLSTATE (the codes this port uses).

Every refusal the port sends is a :class:`PgError`: a SQLSTATE from the constants
below (PostgreSQL's own meaning), a message that says what was wrong and what to do, and
whether it ends the connection (``fatal``: severity FATAL, the server closes) or only the
command (severity ERROR, ReadyForQuery follows).
"""

from __future__ import annotations

from typing import Final

from ..core import SafekeeperError

__all__ = [
    "ADMIN_SHUTDOWN",
    "FEATURE_NOT_SUPPORTED",
    "IDLE_SESSION_TIMEOUT",
    "INVALID_AUTHORIZATION",
    "INVALID_CATALOG_NAME",
    "INVALID_PASSWORD",
    "INTERNAL_ERROR",
    "OBJECT_NOT_IN_PREREQUISITE_STATE",
    "PROTOCOL_VIOLATION",
    "SYNTAX_ERROR",
    "TOO_MANY_CONNECTIONS",
    "UNDEFINED_FILE",
    "UNDEFINED_OBJECT",
    "PgError",
]

PROTOCOL_VIOLATION: Final = "08P01"
FEATURE_NOT_SUPPORTED: Final = "0A000"
INVALID_AUTHORIZATION: Final = "28000"
INVALID_PASSWORD: Final = "28P01"
INVALID_CATALOG_NAME: Final = "3D000"
SYNTAX_ERROR: Final = "42601"
UNDEFINED_OBJECT: Final = "42704"
TOO_MANY_CONNECTIONS: Final = "53300"
OBJECT_NOT_IN_PREREQUISITE_STATE: Final = "55000"
ADMIN_SHUTDOWN: Final = "57P01"
IDLE_SESSION_TIMEOUT: Final = "57P05"
UNDEFINED_FILE: Final = "58P01"
INTERNAL_ERROR: Final = "XX000"


class PgError(SafekeeperError):
    """An ErrorResponse for the client (see the module docstring). ``str(e)`` is the
    message."""

    def __init__(self, sqlstate: str, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        if len(sqlstate) != 5:
            raise ValueError(f"a SQLSTATE has 5 characters, got {sqlstate!r}")
        self.sqlstate = sqlstate
        self.message = message
        self.fatal = fatal
