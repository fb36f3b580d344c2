"""Expected failures are one ``Error:`` line (or a usage error) naming the thing at fault."""

from __future__ import annotations

import socket

import click
import pytest
import trio
from click.testing import CliRunner

from safekeeper_recovery.cli import main
from safekeeper_recovery.cli._errors import with_code_links
from safekeeper_recovery.proposer import NewerTermError

IDS = ["--tenant-id", "5d8a3f0c2b1e4d6f9a7c0e1b2d3f4a5b",
       "--timeline-id", "c0ffee00c0ffee00c0ffee00c0ffee00"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_propose_to_http_urls_is_a_usage_error_naming_the_url() -> None:
    result = CliRunner().invoke(main, [
        "propose", "--safekeepers", "ws://127.0.0.1:5454,http://127.0.0.1:7677", *IDS])
    assert result.exit_code == 2
    assert ("'http://127.0.0.1:7677' is not a ws://HOST:PORT (a node's WAL port, "
            "--listen-wal)") in result.output


def test_node_option_refuses_a_wal_port_url() -> None:
    result = CliRunner().invoke(main, ["timeline", "status", "--node", "ws://127.0.0.1:5454",
                                       *IDS])
    assert result.exit_code == 2
    assert "that is a WAL port URL; --node takes the HTTP API" in result.output


def test_timeline_create_refuses_a_start_no_record_can_start_at() -> None:
    # The node is never asked: a closed port would fail with exit code 1, not 2.
    node = f"http://127.0.0.1:{closed_port()}"
    result = CliRunner().invoke(main, ["timeline", "create", "--node", node, *IDS,
                                       "--start-lsn", "0/1000001"])
    assert result.exit_code == 2
    assert "Invalid value for --start-lsn: start LSN 0/1000001 is not 8-aligned (S1)" in (
        result.output)
    assert "docs/errors.md#s1" in result.output
    inside_header = CliRunner().invoke(main, ["timeline", "create", "--node", node, *IDS,
                                              "--start-lsn", "0/1000010"])
    assert inside_header.exit_code == 2
    assert "start LSN 0/1000010 lies inside a page header (S1)" in inside_header.output


def test_an_unreachable_node_is_named_with_what_to_check() -> None:
    node = f"http://127.0.0.1:{closed_port()}"
    result = CliRunner().invoke(main, ["timeline", "status", "--node", node, *IDS,
                                       "--timeout", "2s"])
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith(f"Error: {node}: no answer (")
    assert line.endswith("is the node running and is the URL its HTTP API (--listen-http)?")


import click
import pytest
import trio
from click.testing import CliRunner

from safekeeper_recovery.cli import main
from safekeeper_recovery.cli._errors import with_code_links
from safekeeper_recovery.proposer import NewerTermError
