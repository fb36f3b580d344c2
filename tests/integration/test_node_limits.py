"""Issue 20: clients that misbehave on the HTTP port of a real ``serve`` process (clients
that vanish mid-request, slow or huge bodies) cost only their own request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from .harness import NodeProcess, wait_until
from .hostile_support import one_node, timeline, write_wal

CONTROL = timeline(1)


def log_lines(node: NodeProcess) -> list[dict[str, object]]:
    """The node's JSON log lines so far (``--log-format json``)."""
    lines = []
    for text in node.stderr().splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    return lines


async def send_partial_request(port: int, head: bytes, body: bytes) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(head + body)
    return stream


@pytest.mark.slow
async def test_a_client_that_disconnects_mid_body_costs_one_info_line_and_no_traceback(
    tmp_path: Path,
) -> None:
    async with one_node(tmp_path, [CONTROL]) as node:
        stream = await send_partial_request(
            node.http_port,
            b"POST /v1/peer_info HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n",
            b'{"node_id": 2, "timelines": [',
        )
        await stream.aclose()

        def about_it() -> list[dict[str, object]]:
            return [x for x in log_lines(node) if "/v1/peer_info" in str(x.get("event"))]

        await wait_until(lambda: bool(about_it()), 10, message="the request to be logged")
        [line] = about_it()
        assert line["level"] == "info", line
        assert "disconnected" in str(line["event"]), line
        assert "exception" not in line, line
        assert "Traceback" not in node.stderr()
        assert "ClientDisconnect" not in node.stderr()
        await write_wal(node, CONTROL)
