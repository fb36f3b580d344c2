"""Issue 20: clients that misbehave on the HTTP port of a real ``serve`` process (clients
that vanish mid-request, slow or huge bodies) cost only their own request."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio

from safekeeper_recovery.testing import NodeProcess, make_ttid, wait_until

from .hostile_support import one_node, write_wal

CONTROL = make_ttid(1)


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


def peak_rss_mib(node: NodeProcess) -> float:
    """The node's peak resident set size so far (``VmHWM``), in MiB."""
    assert node.process is not None
    for line in Path(f"/proc/{node.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


@pytest.mark.slow
async def test_huge_json_bodies_are_refused_without_parsing_them_on_the_event_loop(
    tmp_path: Path,
) -> None:
    async with one_node(tmp_path, [CONTROL]) as node:
        before = peak_rss_mib(node)
        hostile = b"[" + b"{}," * ((8 << 20) // 3 - 10) + b"{}]"  # just under 8 MiB
        async with httpx.AsyncClient(base_url=node.http_url, timeout=30) as http:
            answers: list[httpx.Response] = []

            async def post(body: bytes) -> None:
                answers.append(await http.post("/v1/peer_info", content=body))

            async with trio.open_nursery() as nursery:
                for _ in range(4):  # four at once, as in the issue
                    nursery.start_soon(post, hostile)
            assert [r.status_code for r in answers] == [400] * 4, answers[0].text
            r = await http.get("/healthz")
            assert r.status_code == 200
        growth = peak_rss_mib(node) - before
        # The raw bodies alone are 4 x 8 MiB (and a copy each while joined); parsing them
        # would build ~2.8 million dicts each (hundreds of MiB).
        assert growth < 120, f"peak RSS grew by {growth:.0f} MiB"
        await write_wal(node, CONTROL)


@pytest.mark.slow
async def test_a_request_body_that_trickles_in_is_cut_off_after_the_client_timeout(
    tmp_path: Path,
) -> None:
    async with one_node(tmp_path, [CONTROL], "--client-timeout", "2s") as node:
        stream = await send_partial_request(
            node.http_port,
            b"POST /v1/peer_info HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n",
            b"{",
        )
        answer = b""
        with trio.fail_after(15):  # a byte every 0.2 s would keep it going for 200 s
            async with trio.open_nursery() as nursery:

                async def trickle() -> None:
                    while True:
                        await trio.sleep(0.2)
                        try:
                            await stream.send_all(b" ")
                        except trio.BrokenResourceError:
                            return

                nursery.start_soon(trickle)
                while b"\r\n\r\n" not in answer:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    answer += chunk
                nursery.cancel_scope.cancel()
        await stream.aclose()
        assert answer.split(b" ", 2)[1] == b"408", answer
        await write_wal(node, CONTROL)
