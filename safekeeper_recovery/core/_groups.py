"""Exception groups, flattened: the one helper for what trio's nurseries wrap."""

from __future__ import annotations

__all__ = ["leaves"]


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside ``error``, exception groups flattened (trio's nurseries wrap
    a child's error in one); ``[error]`` for a plain exception. The one such helper."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]
