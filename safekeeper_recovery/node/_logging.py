"""Structured logging for the node process (structlog, stdlib ``logging`` routed through it).

Library modules log with ``logging.getLogger(__name__)``; this module makes those records
and structlog's own come out as one stream on stderr: JSON lines (one object per line with
``timestamp``, ``level``, ``logger``, ``event`` and any extra keys) when the stream is not a
terminal or ``json`` is asked for, coloured console lines otherwise.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from ._config import LogFormat

__all__ = ["configure_logging"]


def configure_logging(
    log_format: LogFormat = "auto", level: str = "info", *, stream: TextIO | None = None
) -> None:
    """Configure structlog and the stdlib root logger (idempotent: replaces handlers).

    ``auto`` picks JSON unless ``stream`` (default stderr) is a TTY.
    """
    out = stream if stream is not None else sys.stderr
    as_json = log_format == "json" or (log_format == "auto" and not _isatty(out))
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.PositionalArgumentsFormatter(),
    ]
    renderer: structlog.types.Processor
    if as_json:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(out))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party chatter: keep warnings, drop per-request info lines.
    for noisy in ("hypercorn.access", "httpx", "httpcore", "trio-websocket"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
