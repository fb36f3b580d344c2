"""``serve_node``: wire one safekeeper node together and run it until cancelled.

Start-up order (each step is ready before the next starts, so nothing is served half-made):

1. the timeline registry loads every timeline from ``data_dir`` (a timeline that fails to
   load is reported broken; the others run);
2. the WAL port and 3. the HTTP port start listening (ports known once they listen);
4. the peer exchange pushes our timelines' info to every configured peer: changes at once
   (coalesced), a heartbeat every ``peer_push_interval``, everything now and then;
5. in-memory horizons are persisted every ``persist_interval`` (timelines with something
   to persist only: 10,000 idle ones cost nothing);
6. ``task_status.started(RunningNode(...))``.

Shutdown is cancellation: servers stop accepting and their connections are cancelled, then
(shielded, bounded by :data:`SHUTDOWN_FLUSH_TIMEOUT`) every timeline with written but
unflushed WAL is fsynced (``FlushWal``), in-memory state is persisted, and the WAL stores
are closed.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Final

import attrs
import trio

from ..core import FlushWal, SafekeeperError, TenantTimelineId
from ..recovery import RecoveryStatus, RecoveryThrottles
from ..storage import Archive, open_archive, recent_wal_budget
from ..timeline import (
    DiskGuard,
    FileBackend,
    LifecycleReport,
    PeerHub,
    Timeline,
    TimelineRegistry,
    TimelineService,
)
from ..transport import (
    Authenticator,
    ConnectionSlots,
    HttpPeerExchange,
    NodeContext,
    NodeMetrics,
    PgServerConfig,
    PullConfig,
    PullService,
    RecoveryAdmin,
    WalSenders,
    WalServerConfig,
    build_http_app,
    connection_cap,
    enable_wsproto_fastpath,
    serve_http,
    serve_peer_exchange,
    serve_pg,
    serve_wal,
)
from ._config import HostPort, NodeConfig
from ._data_dir_lock import DataDirLock
from ._disk import build_disk_guard
from ._pull_missing import serve_pull_missing
from ._recovery import build_throttles

__all__ = ["SHUTDOWN_FLUSH_TIMEOUT", "RunningNode", "serve_node"]

log = logging.getLogger(__name__)

SHUTDOWN_FLUSH_TIMEOUT: Final = 30.0
"""Upper bound on the shielded flush at shutdown (a dead disk must not hang the process)."""


@attrs.frozen
class RunningNode:
    """What ``serve_node`` hands to ``task_status.started``: the bound ports and the parts."""

    config: NodeConfig
    http_port: int
    wal_port: int
    advertise_http: HostPort
    advertise_wal: HostPort
    registry: TimelineRegistry
    context: NodeContext
    exchange: HttpPeerExchange
    pg_port: int | None = None
    """The bound PostgreSQL replication port (``listen_pg``), or ``None``."""

    @property
    def http_url(self) -> str:
        return f"http://{_url_host(self.advertise_http[0])}:{self.advertise_http[1]}"

    @property
    def wal_url(self) -> str:
        return f"ws://{_url_host(self.advertise_wal[0])}:{self.advertise_wal[1]}"


async def serve_node(
    config: NodeConfig,
    *,
    extra_services: Sequence[TimelineService] = (),
    recovery_admin: RecoveryAdmin | None = None,
    recovery_statuses: Mapping[TenantTimelineId, RecoveryStatus] | None = None,
    lifecycle_statuses: Mapping[TenantTimelineId, LifecycleReport] | None = None,
    metrics: NodeMetrics | None = None,
    archive: Archive | None = None,
    throttles: RecoveryThrottles | None = None,
    disk_guard: DiskGuard | None = None,
    task_status: trio.TaskStatus[RunningNode] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the node described by ``config`` until cancelled (see the module docstring).

    ``extra_services`` run per timeline in the timeline's nursery (the recovery engine is
    one); ``recovery_admin`` is handed to the HTTP app for its recovery admin endpoints
    and ``recovery_statuses`` (the registry ``node.recovery_service`` fills) to its
    timeline status (without it every timeline's recovery shows ``disabled``), likewise
    ``lifecycle_statuses`` (filled by ``node.lifecycle_service``);
    ``metrics`` (made here if not given) is shared by the HTTP app and such services, and
    so is ``disk_guard`` (made from ``config.max_disk_usage`` if not given; run here).
    ``archive`` (opened from ``config.archive`` if not given) serves WAL this node removed
    to the peers that ask for it on the WAL port.
    The data directory is locked first (:class:`DataDirLock`, released on return), so a
    second node on it fails with :class:`DataDirLocked`, naming the holder's pid, before it
    reads or writes anything else. Raises ``OSError`` if a port cannot be bound,
    ``SafekeeperError``/``OSError`` if the auth key or token file cannot be read. Never
    returns unless cancelled. ``throttles`` (the recovery engine's, so that one HTTP call
    changes both sides; made from ``config`` if not given) pace and cap the recovery
    streams this node serves. Starting a node opts the process into the wsproto fast path
    (``transport.enable_wsproto_fastpath``): a node is a process of its own, or its
    embedder asked for one.
    """
    enable_wsproto_fastpath()
    authenticator = Authenticator.from_file(config.auth_public_key)
    peer_token = read_peer_token(config)
    _make_data_dir(config.data_dir)
    with DataDirLock.acquire(config.data_dir):
        await _serve_locked(
            config, authenticator, peer_token, extra_services=extra_services,
            recovery_admin=recovery_admin, recovery_statuses=recovery_statuses,
            lifecycle_statuses=lifecycle_statuses, metrics=metrics, archive=archive,
            throttles=throttles if throttles is not None else build_throttles(config),
            disk_guard=disk_guard,
            task_status=task_status,
        )


async def _serve_locked(
    config: NodeConfig,
    authenticator: Authenticator,
    peer_token: str | None,
    *,
    extra_services: Sequence[TimelineService],
    recovery_admin: RecoveryAdmin | None,
    recovery_statuses: Mapping[TenantTimelineId, RecoveryStatus] | None,
    lifecycle_statuses: Mapping[TenantTimelineId, LifecycleReport] | None,
    metrics: NodeMetrics | None,
    archive: Archive | None,
    throttles: RecoveryThrottles,
    disk_guard: DiskGuard | None,
    task_status: trio.TaskStatus[RunningNode],
) -> None:
    """:func:`serve_node` once the data directory is locked."""
    # Both ports are checked before anything opens (loading thousands of timelines takes
    # a while): a taken port is reported at once, naming its address and option.
    await trio.to_thread.run_sync(_check_can_listen, config.listen_wal, "--listen-wal")
    await trio.to_thread.run_sync(_check_can_listen, config.listen_http, "--listen-http")
    if config.listen_pg is not None:
        await trio.to_thread.run_sync(_check_can_listen, config.listen_pg, "--listen-pg")
    metrics = metrics if metrics is not None else NodeMetrics()
    # Process-wide, like the O_DIRECT staging buffers: a library user running several
    # nodes in one process shares one budget, set by the last node started.
    recent_wal_budget.limit = config.wal_memory
    guard = disk_guard if disk_guard is not None else build_disk_guard(config, metrics)
    registry = TimelineRegistry(
        config.node_id, FileBackend(config.data_dir, direct_io=config.wal_direct_io),
        services=extra_services,
        observer=metrics, hub=PeerHub(silence_wake=config.heartbeat_timeout), guard=guard,
    )
    metrics.wal_disk_bytes.set_function(  # read at scrape time: nothing on the write path
        lambda: sum(t.wal_disk_bytes for t in registry.timelines.values()))
    context = NodeContext(
        registry=registry,
        node_id=config.node_id,
        authenticator=authenticator,
        metrics=metrics,
        recovery=recovery_admin,
        recovery_statuses=recovery_statuses if recovery_statuses is not None else {},
        lifecycle_statuses=lifecycle_statuses if lifecycle_statuses is not None else {},
        walsenders=WalSenders(),
        heartbeat_timeout=config.heartbeat_timeout,
        body_timeout=config.client_timeout,
        throttles=throttles,
        disk_guard=guard,
    )
    pulls = PullService(registry, PullConfig(token=peer_token, timeout=config.http_timeout),
                        metrics=metrics)
    context.pulls = pulls
    wal_config = WalServerConfig(
        keepalive_interval=config.keepalive_interval, handshake_timeout=config.connect_timeout,
        idle_timeout=config.client_timeout, heartbeat_timeout=config.heartbeat_timeout,
        archive=archive if archive is not None or config.archive is None
        else open_archive(config.archive, endpoint=config.archive_endpoint),
    )
    slots = ConnectionSlots(connection_cap(config.max_connections))
    metrics.track_pg_consumers(partial(_pg_consumer_samples, registry))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(guard.serve)
            await nursery.start(registry.serve)
            await nursery.start(pulls.serve)
            wal_host, wal_port_asked = config.listen_wal
            wal_port: int = await nursery.start(
                partial(
                    serve_wal, registry, authenticator, wal_host, wal_port_asked,
                    config=wal_config, slots=slots, senders=context.walsenders,
                    throttles=throttles,
                )
            )
            # Snapshots pay the serve rate with the WAL port's at-risk grace (rule T7).
            context.listening_since = trio.current_time()
            http_host, http_port_asked = config.listen_http
            http_port: int = await nursery.start(
                partial(
                    serve_http,
                    build_http_app(context),
                    http_host,
                    http_port_asked,
                    slots=slots,
                )
            )
            pg_port: int | None = None
            if config.listen_pg is not None:
                pg_port = await nursery.start(partial(
                    serve_pg, registry, authenticator, *config.listen_pg, slots=slots,
                    observer=metrics, config=PgServerConfig(
                        keepalive_interval=config.keepalive_interval,
                        startup_timeout=config.connect_timeout,
                        idle_timeout=config.client_timeout),
                ))
            # Port 0 binds are only known now: advertise the real ports.
            advertise_wal = config.advertise_wal or (wal_host, wal_port)
            advertise_http = config.advertise_http or (http_host, http_port)
            running = RunningNode(
                config=config,
                http_port=http_port,
                wal_port=wal_port,
                advertise_http=advertise_http,
                advertise_wal=advertise_wal,
                registry=registry,
                context=context,
                exchange=HttpPeerExchange(
                    config.peers, token=peer_token, timeout=config.http_timeout
                ),
                pg_port=pg_port,
            )
            context.http_addr = running.http_url
            context.wal_addr = running.wal_url
            await nursery.start(running.exchange.serve)
            await nursery.start(
                partial(
                    serve_peer_exchange, registry, running.exchange, config.node_id,
                    running.http_url, running.wal_url, interval=config.peer_push_interval,
                )
            )
            nursery.start_soon(_persist_periodically, registry, config.persist_interval)
            if config.pull_missing_timelines and config.peers:
                nursery.start_soon(partial(
                    serve_pull_missing, registry, pulls, config.peers, token=peer_token,
                    timeout=config.http_timeout))
            log.info(
                "node %s serving: http %s, wal %s, %d peers, recovery %s, at most %d "
                "client connections", config.node_id, running.http_url, running.wal_url,
                len(config.peers), "on" if config.recovery else "off", slots.limit,
            )
            task_status.started(running)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_FLUSH_TIMEOUT) as cs:
            await _flush_and_close(registry)
        if cs.cancelled_caught:
            log.error("shutdown flush did not finish within %ss", SHUTDOWN_FLUSH_TIMEOUT)


def _pg_consumer_samples(registry: TimelineRegistry) -> list[tuple[bool, int]]:
    """(connected, lag) of every pg consumer of every timeline, for the metrics."""
    return [
        (c.connected, max(0, int(t.commit_lsn) - int(c.position)))
        for t in list(registry.timelines.values()) for c in t.consumers.all()
    ]


async def _persist_periodically(registry: TimelineRegistry, interval: float) -> None:
    """Persist in-memory horizons every ``interval`` seconds; never returns."""
    while True:
        await trio.sleep(interval)
        for timeline in list(registry.timelines.values()):
            if not timeline.needs_persist:
                continue
            try:
                await timeline.persist_in_memory()
            except SafekeeperError as e:
                # A broken timeline reports itself; the others must keep being persisted.
                log.warning("periodic persist of %s failed: %s", timeline.ttid, e)


async def _flush_and_close(registry: TimelineRegistry) -> None:
    """Make written WAL durable, persist in-memory state, close the stores."""
    timelines = list(registry.timelines.values())
    for timeline in timelines:
        await _flush(timeline)
    try:
        await registry.persist_all()
    except SafekeeperError as e:
        log.warning("persist at shutdown failed: %s", e)
    for timeline in timelines:
        if not timeline.deleted:
            await timeline.store.aclose()
    log.info("flushed and closed %d timelines", len(timelines))


async def _flush(timeline: Timeline) -> None:
    snap = timeline.snapshot()
    if snap.broken is not None or timeline.deleted or snap.write_lsn <= snap.flush_lsn:
        return
    try:
        await timeline.process(FlushWal())
    except SafekeeperError as e:
        log.error("timeline %s: flush at shutdown failed: %s", timeline.ttid, e)


def _make_data_dir(path: Path) -> None:
    """Create the data directory if missing; raise ``SafekeeperError`` naming it if it is
    not a directory or cannot be made."""
    if path.exists() and not path.is_dir():
        raise SafekeeperError(
            f"data dir {path} is not a directory (--data-dir): give a directory, or a path "
            "that does not exist yet")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SafekeeperError(
            f"cannot create data dir {path} (--data-dir): {e.strerror or e}") from None


def _check_can_listen(address: HostPort, option: str) -> None:
    """Raise ``SafekeeperError`` naming ``address`` and ``option`` if it cannot be bound
    (the servers bind it for real afterwards; port 0 always works)."""
    host, port = address
    if port == 0:
        return
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError as e:
        raise SafekeeperError(f"cannot listen on {shown} ({option}): {e}") from None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as sock:
            # As trio's listeners do: a port in TIME_WAIT is free to reuse.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
            except OSError as e:
                hint = (": another process is listening there (a node still running?); stop "
                        "it or choose another port") if e.errno == errno.EADDRINUSE else ""
                raise SafekeeperError(
                    f"cannot listen on {shown} ({option}): {e.strerror or e}{hint}") from None


def read_peer_token(config: NodeConfig) -> str | None:
    """The token this node sends to its peers (``--token-file``), or ``None``."""
    if config.token_file is None:
        return None
    token = config.token_file.read_text().strip()
    if not token:
        raise SafekeeperError(f"auth token file {config.token_file} is empty")
    return token


def _url_host(host: str) -> str:
    """A host as it goes into a URL: wildcard binds become loopback, IPv6 gets brackets."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
