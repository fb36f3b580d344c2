"""How the commands word a failure: one line naming the thing, and what to do about it.

click prints a ``ClickException`` as ``Error: <message>`` (exit 1) and a usage error with
the usage line (exit 2); these helpers build the message. Codes such as ``S1`` or ``R3``
in a message are explained in docs/errors.md, and :func:`failure` says where: a code in a
message is a rule number, meaningless without its row in that table.
"""

from __future__ import annotations

import re
from typing import Final

import click

from ..transport import HttpError, HttpUnavailable

__all__ = ["CODE_ANCHORS", "ERRORS_DOC", "failure", "node_error", "with_code_links"]

ERRORS_DOC: Final = "docs/errors.md"

CODE_ANCHORS: Final = {
    **{f"R{n}": f"r{n}" for n in range(1, 11)},
    **{f"S{n}": f"s{n}" for n in range(1, 6)},
    **{f"W{n}": f"w{n}" for n in range(1, 6)},
    **{f"E{n}": f"e{n - (n + 1) % 2}" for n in range(1, 7)},  # rows E1-E2, E3-E4, E5-E6
    **{f"P{n}": f"p{n}" for n in range(1, 7)},
    **{f"U{n}": f"u{n}" for n in range(1, 5)},
}
"""Each rule code a message can carry -> the anchor of its row in docs/errors.md."""

_CODE: Final = re.compile(r"(?<![\w/.-])([RSWEPU]\d{1,2})(?=[:),;]|\s|$)")
"""A code as messages write it (``R7: …``, ``(S1)``): not part of an id, LSN or word."""

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


def with_code_links(message: str) -> str:
    """``message``, followed by where each rule code in it is explained (once per code, in
    order); unchanged without codes or when it already names docs/errors.md."""
    if ERRORS_DOC in message:
        return message
    codes = dict.fromkeys(c for c in _CODE.findall(message) if c in CODE_ANCHORS)
    if not codes:
        return message
    links = ", ".join(f"{ERRORS_DOC}#{CODE_ANCHORS[c]}" for c in codes)
    return f"{message} (see {links})"


def failure(message: str) -> click.ClickException:
    """The ``Error:`` line (exit 1) of an expected failure, with its codes explained."""
    return click.ClickException(with_code_links(message))
