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


@pytest.mark.parametrize(("message", "expected"), [
    ("R7: append at 0/1000100, WAL ends at 0/1000000",
     "R7: append at 0/1000100, WAL ends at 0/1000000 (see docs/errors.md#r7)"),
    ("node a: R10: term bump refused; node b: R2: vote not given; node c: R10: again",
     "node a: R10: term bump refused; node b: R2: vote not given; node c: R10: again "
     "(see docs/errors.md#r10, docs/errors.md#r2)"),
    ("votes disagree (E4)", "votes disagree (E4) (see docs/errors.md#e3)"),
    ("start LSN 0/1000001 is not 8-aligned (S1) (see docs/errors.md#s1)",
     "start LSN 0/1000001 is not 8-aligned (S1) (see docs/errors.md#s1)"),
])
def test_a_rule_code_in_a_message_says_where_it_is_explained(message: str, expected: str
                                                             ) -> None:
    assert with_code_links(message) == expected


@pytest.mark.parametrize("message", [
    "WAL ends at 1/E5: torn tail",  # an LSN, not rule E5
    "timeline 5a5a/00e1 is not here",
    "ROUTE-R1: a word, not a code",
    "R11: no such rule",
    "lost quorum: 1 of 3 safekeepers reachable, need 2",
])
def test_text_that_only_looks_like_a_code_gets_no_link(message: str) -> None:
    assert with_code_links(message) == message


def _failing_command(error: BaseException) -> click.Command:
    @click.command("fails-in-a-nursery")
    def fails() -> None:
        async def body() -> None:
            async with trio.open_nursery() as nursery:
                async def boom() -> None:
                    raise error

                nursery.start_soon(boom)

        trio.run(body)

    return fails


@pytest.mark.parametrize("error", [
    NewerTermError(3, None, where="vote ws://sk3, term already taken"),
    ConnectionRefusedError("ws://sk3: connection refused"),
])
def test_an_expected_failure_in_a_nursery_is_one_error_line(error: BaseException) -> None:
    """trio wraps a nursery's error in an ExceptionGroup; the CLI still prints one line."""
    command = _failing_command(error)
    main.add_command(command)
    try:
        result = CliRunner().invoke(main, ["fails-in-a-nursery"])
    finally:
        del main.commands["fails-in-a-nursery"]
    assert result.exit_code == 1
    assert result.output == f"Error: {error}\n"


def test_a_bug_in_a_nursery_keeps_its_traceback() -> None:
    command = _failing_command(ZeroDivisionError("a bug"))
    main.add_command(command)
    try:
        result = CliRunner().invoke(main, ["fails-in-a-nursery"])
    finally:
        del main.commands["fails-in-a-nursery"]
    assert result.exit_code == 1
    assert isinstance(result.exception, BaseExceptionGroup)
