"""The pg port in process, spoken to byte by byte: every refusal is an ErrorResponse with
its SQLSTATE (``_pg_server`` G1-G5, ``_pg_stream`` T1-T6), and the port goes on serving."""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import trio

from safekeeper_recovery.core import Lsn, TenantId
from safekeeper_recovery.testing import wait_until
from safekeeper_recovery.transport import PgServerConfig, issue_token, serve_pg
from safekeeper_recovery.transport._auth import Authenticator, generate_keypair
from safekeeper_recovery.transport._connections import ConnectionSlots

from .conftest import START, TENANT, TIMELINE, WalNode, wal

OPTIONS = f"-c tenant_id={TENANT} -c timeline_id={TIMELINE}"


@attrs.define
class Reply:
    kind: bytes
    body: bytes

    def fields(self) -> dict[str, str]:
        """An ErrorResponse's fields by code letter."""
        return {f[:1].decode(): f[1:].decode() for f in self.body[:-1].split(b"\0") if f}


class RawClient:
    """Speaks the protocol by hand (independent of the server's own codec)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    async def startup(self, **params: str) -> None:
        body = struct.pack("!i", 3 << 16) + b"".join(
            k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
        await self.stream.send_all(struct.pack("!i", len(body) + 4) + body)

    async def send(self, kind: bytes, body: bytes) -> None:
        await self.stream.send_all(kind + struct.pack("!i", len(body) + 4) + body)

    async def query(self, text: str) -> None:
        await self.send(b"Q", text.encode() + b"\0")

    async def _fill(self, n: int) -> bool:
        while len(self.buf) < n:
            data = await self.stream.receive_some(65536)
            if not data:
                return False
            self.buf += data
        return True

    async def receive(self) -> Reply | None:
        """The next message, or None at end of file."""
        with trio.fail_after(10):
            if not await self._fill(5):
                return None
            length = struct.unpack_from("!i", self.buf, 1)[0]
            if not await self._fill(1 + length):
                return None
        kind, body = self.buf[:1], self.buf[5:1 + length]
        self.buf = self.buf[1 + length:]
        return Reply(kind, body)

    async def until(self, *kinds: bytes) -> list[Reply]:
        """Messages up to and including the first of ``kinds`` (or end of file)."""
        out: list[Reply] = []
        while (r := await self.receive()) is not None:
            out.append(r)
            if r.kind in kinds:
                break
        return out


_clients: list[RawClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    # Synchronously (an async fixture's teardown is not run here, and a trio socket's
    # close needs trio's context): detach each socket from its descriptor and close that.
    while _clients:
        fd = _clients.pop().stream.socket.detach()
        if fd >= 0:
            os.close(fd)


async def connect(port: int) -> RawClient:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    _clients.append(client)
    return client


def error_of(replies: list[Reply]) -> dict[str, str]:
    errors = [r for r in replies if r.kind == b"E"]
    assert errors, f"no ErrorResponse in {[r.kind for r in replies]}"
    return errors[0].fields()


async def start_pg(node: WalNode, *, authenticator: Authenticator | None = None,
                   config: PgServerConfig | None = None,
                   slots: ConnectionSlots | None = None) -> int:
    port: int = await node.nursery.start(functools.partial(
        serve_pg, node.registry, authenticator or Authenticator(None), "127.0.0.1", 0,
        config=config or PgServerConfig(keepalive_interval=0.2), slots=slots))
    return port


async def ready(port: int, **extra: str) -> RawClient:
    c = await connect(port)
    await c.startup(user="u", replication="true", options=OPTIONS, **extra)
    replies = await c.until(b"Z", b"E")
    assert replies[-1].kind == b"Z", error_of(replies)
    return c


async def identify(port: int) -> list[str | None]:
    """IDENTIFY_SYSTEM on a fresh connection: the row's values."""
    c = await ready(port)
    await c.query("IDENTIFY_SYSTEM")
    replies = await c.until(b"Z")
    row = next(r for r in replies if r.kind == b"D")
    values: list[str | None] = []
    pos = 2
    for _ in range(struct.unpack_from("!h", row.body)[0]):
        n = struct.unpack_from("!i", row.body, pos)[0]
        pos += 4
        values.append(None if n < 0 else row.body[pos:pos + n].decode())
        pos += max(n, 0)
    await c.stream.aclose()
    return values


@pytest.fixture
async def pg(pushed: tuple[WalNode, Lsn]) -> tuple[WalNode, int]:
    node, _ = pushed
    port = await start_pg(node)
    return node, port


async def test_ssl_request_is_declined_then_identify_system(pg: tuple[WalNode, int]) -> None:
    _node, port = pg
    c = await connect(port)
    await c.stream.send_all(struct.pack("!ii", 8, 80877103))
    assert await c.stream.receive_some(1) == b"N"
    await c.startup(user="u", replication="true", options=OPTIONS)
    replies = await c.until(b"Z")
    params = {p.body.split(b"\0")[0].decode(): p.body.split(b"\0")[1].decode()
              for p in replies if p.kind == b"S"}
    assert params["integer_datetimes"] == "on"
    assert "server_version" in params
    assert (await identify(port))[1:] == ["1", str(START + 200 * 1024), None]


@pytest.mark.parametrize(("params", "sqlstate", "words"), [
    ({"options": OPTIONS}, "0A000", "replication=true"),
    ({"replication": "database", "options": OPTIONS}, "0A000", "logical"),
    ({"replication": "true", "options": f"-c tenant_id={TENANT}"}, "28000", "timeline_id"),
    ({"replication": "true", "options": f"-c tenant_id={TENANT} -c timeline_id={'f' * 32}"},
     "3D000", "does not exist"),
    ({"replication": "true", "options": f"-c tenant_id=xyz -c timeline_id={TIMELINE}"},
     "28000", "tenant_id"),
])
async def test_startup_refusals_are_fatal_with_their_sqlstate(
    pg: tuple[WalNode, int], params: dict[str, str], sqlstate: str, words: str,
) -> None:
    _, port = pg
    c = await connect(port)
    await c.startup(user="u", **params)
    replies = await c.until(b"E")
    fields = error_of(replies)
    assert (fields["S"], fields["C"]) == ("FATAL", sqlstate)
    assert words in fields["M"]
    assert await c.receive() is None  # closed
    assert await identify(port)  # the port goes on


@pytest.mark.parametrize(("command", "sqlstate", "words"), [
    ("SELECT 1", "0A000", "cannot execute SQL commands"),
    ("BASE_BACKUP", "0A000", "not supported"),
    ("SHOW shared_buffers", "42704", "unrecognized configuration parameter"),
    ("TIMELINE_HISTORY 2", "58P01", "timeline 1"),
    ("START_REPLICATION PHYSICAL 0/0", "58P01", "has already been removed"),
    ("START_REPLICATION PHYSICAL 0/FFFFFFFF", "55000", "ahead of the WAL flush position"),
    ("START_REPLICATION PHYSICAL 0/1000000 TIMELINE 2", "55000", "timeline 2"),
    ("START_REPLICATION", "42601", "usage"),
])
async def test_command_refusals_are_errors_and_the_session_goes_on(
    pg: tuple[WalNode, int], command: str, sqlstate: str, words: str,
) -> None:
    _, port = pg
    c = await ready(port)
    await c.query(command)
    replies = await c.until(b"Z")
    fields = error_of(replies)
    assert (fields["S"], fields["C"]) == ("ERROR", sqlstate)
    assert words in fields["M"]
    await c.query("SHOW wal_segment_size")
    replies = await c.until(b"Z")
    assert [r.kind for r in replies] == [b"T", b"D", b"C", b"Z"]
    assert replies[1].body.endswith(b"1MB")


async def test_start_replication_streams_committed_wal_only_and_ends_on_copy_done(
    pg: tuple[WalNode, int],
) -> None:
    node, port = pg
    commit = START + 200 * 1024
    c = await ready(port, application_name="reader")
    await c.query(f"START_REPLICATION PHYSICAL {START}")
    assert (await c.receive()).kind == b"W"  # type: ignore[union-attr]
    got = b""
    while len(got) < commit - START:
        r = await c.receive()
        assert r is not None
        assert r.kind == b"d"
        if r.body[:1] == b"w":
            start, end, _ = struct.unpack_from("!QQq", r.body, 1)
            assert start == START + len(got)
            assert end <= commit  # T4: never past the commit
            got += r.body[25:]
    assert got == wal(300 * 1024)[: commit - START]
    # a keepalive asks for a reply once nothing is left to send
    r = await c.receive()
    assert r is not None
    assert r.body[:1] == b"k"
    assert struct.unpack_from("!Q", r.body, 1)[0] == commit
    assert r.body[-1] == 1
    await c.send(b"d", b"r" + struct.pack("!QQQqB", commit, commit, commit, 0, 0))
    consumer = node.timeline.consumers.all()[0]
    with trio.fail_after(10):
        await node.timeline.changed.wait_for(lambda: consumer.flush_lsn == commit)
    assert (consumer.name, consumer.connected, consumer.position) == ("app:reader", True, commit)
    await c.send(b"c", b"")
    replies = await c.until(b"Z")
    kinds = [r.kind for r in replies if r.kind != b"d"]
    assert kinds == [b"c", b"C", b"Z"]
    await c.query("IDENTIFY_SYSTEM")  # the session goes on after the stream
    assert (await c.until(b"Z"))[-1].kind == b"Z"
    await c.send(b"X", b"")
    assert await c.receive() is None
    with trio.fail_after(10):
        await node.timeline.changed.wait_for(lambda: not consumer.connected)
    assert node.timeline.consumers.holds(trio.current_time(), 600) == [commit]  # K3
    assert node.timeline.consumers.holds(trio.current_time() + 601, 600) == []


async def test_a_silent_client_is_closed_with_57p05(pushed: tuple[WalNode, Lsn]) -> None:
    node, _ = pushed
    port = await start_pg(node, config=PgServerConfig(keepalive_interval=0.1,
                                                      idle_timeout=0.5))
    c = await ready(port)
    fields = error_of(await c.until(b"E"))
    assert (fields["S"], fields["C"]) == ("FATAL", "57P05")
    # while streaming too: keepalives go unanswered
    c = await ready(port)
    await c.query(f"START_REPLICATION {START}")
    replies = await c.until(b"E")
    assert error_of(replies)["C"] == "57P05"


async def test_auth_cleartext_password_carries_the_jwt(
    pushed: tuple[WalNode, Lsn], tmp_path: Path,
) -> None:
    node, _ = pushed
    private, public = generate_keypair()
    port = await start_pg(node, authenticator=Authenticator(public))
    good = issue_token(private, "tenant", tenant_id=TENANT)
    other = issue_token(private, "tenant", tenant_id=TenantId(bytes(16)))
    for password, sqlstate in (("garbage", "28P01"), (other, "28000"), (good, None)):
        c = await connect(port)
        await c.startup(user="u", replication="true", options=OPTIONS)
        ask = await c.receive()
        assert ask is not None
        assert (ask.kind, ask.body) == (b"R", struct.pack("!i", 3))
        await c.send(b"p", password.encode() + b"\0")
        replies = await c.until(b"Z", b"E")
        if sqlstate is None:
            assert replies[0].body == struct.pack("!i", 0)
            assert replies[-1].kind == b"Z"
        else:
            fields = error_of(replies)
            assert (fields["S"], fields["C"]) == ("FATAL", sqlstate)


async def test_beyond_the_connection_cap_a_client_gets_53300(
    pushed: tuple[WalNode, Lsn],
) -> None:
    node, _ = pushed
    slots = ConnectionSlots(1)
    port = await start_pg(node, slots=slots)
    first = await ready(port)
    c = await connect(port)
    await c.startup(user="u", replication="true", options=OPTIONS)
    fields = error_of(await c.until(b"E"))
    assert fields["C"] == "53300"
    await first.stream.aclose()
    await wait_until(lambda: slots.statistics().open == 0, 10, message="the slot freed")
    assert await identify(port)


async def test_garbage_framing_is_fatal_and_harms_no_one(pg: tuple[WalNode, int]) -> None:
    _, port = pg
    keep = await ready(port)
    c = await ready(port)
    await c.stream.send_all(b"Q" + struct.pack("!i", 2))
    fields = error_of(await c.until(b"E"))
    assert (fields["S"], fields["C"]) == ("FATAL", "08P01")
    await keep.query("IDENTIFY_SYSTEM")
    assert (await keep.until(b"Z"))[-1].kind == b"Z"
