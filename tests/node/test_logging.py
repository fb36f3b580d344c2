"""Logging: stdlib records come out as JSON lines (or console lines) through structlog."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from safekeeper_recovery.node import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
def test_stdlib_records_become_json_lines() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    logging.getLogger("safekeeper_recovery.test").info("node %s ready", 7)
    logging.getLogger("safekeeper_recovery.test").debug("hidden at info level")
    structlog.get_logger("safekeeper_recovery.sl").warning("peer down", peer=3)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["event"], r["level"]) for r in lines] == [
        ("node 7 ready", "info"),
        ("peer down", "warning"),
    ]
    assert lines[0]["logger"] == "safekeeper_recovery.test"
    assert lines[1]["peer"] == 3
    assert "timestamp" in lines[0]


@pytest.mark.usefixtures("restore_logging")
def test_auto_is_json_when_not_a_terminal_and_console_is_not_json() -> None:
    out = io.StringIO()
    configure_logging("auto", stream=out)
    logging.getLogger("x").info("hello")
    assert json.loads(out.getvalue())["event"] == "hello"
    console = io.StringIO()
    configure_logging("console", stream=console)
    logging.getLogger("x").info("hello")
    assert "hello" in console.getvalue()
    assert not console.getvalue().startswith("{")
