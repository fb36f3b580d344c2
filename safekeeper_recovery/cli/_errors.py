"""How the commands word a failure: one line naming the thing, and what to do about it.

click prints a ``ClickException`` as ``Error: <message>`` (exit 1) and a usage error with
the usage line (exit 2); these helpers build the message. Codes such as ``S1`` or ``R3``
in a message are explained in docs/errors.md.
"""

from __future__ import annotations

from typing import Final

from ..transport._http_client import HttpError, HttpUnavailable

__all__ = ["ERRORS_DOC", "node_error"]

ERRORS_DOC: Final = "docs/errors.md"

_HINTS: Final = {
    401: "the node has auth on: give --token-file with a token from `safekeeper-recovery "
         "token`",
    403: "the token's scope does not cover this: use a safekeeperdata token",
    404: "no such timeline on this node (create it with `safekeeper-recovery timeline "
         "create`)",
    503: "the timeline is stopped or the node is short of a resource: see the node's log",
}


def node_error(node: str, error: HttpError, hints: dict[int, str] | None = None) -> str:
    """``<node>: <what happened>; <what to do>`` for a failed request to ``node``
    (``hints`` by HTTP status replace the general ones)."""
    if isinstance(error, HttpUnavailable):
        return f"{node}: no answer ({error.message}); is the node running and is the URL " \
               "its HTTP API (--listen-http)?"
    hint = {**_HINTS, **(hints or {})}.get(error.status)
    return f"{node}: HTTP {error.status}: {error.message}" + (f"; {hint}" if hint else "")
