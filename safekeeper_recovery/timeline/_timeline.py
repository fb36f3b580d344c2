"""One timeline: acceptor + storage under one lock, change notifications, peers, receivers.

Contract
--------
* Every message to the acceptor goes through :meth:`Timeline.process`, one at a time under
  ``lock`` (reference §2.3); its effects are carried out in order before the reply is
  returned, so a reply never acknowledges anything that is not durable.
* A storage failure or a fatal acceptor error *breaks* the timeline: it stops taking writes
  (``broken`` says why, starting with ``disk full:``, ``I/O error:`` or ``storage
  failure:`` for a disk fault) while the process and the other timelines go on. The reply
  of the failed message is never sent, so nothing that failed to reach the disk is
  acknowledged. A broken timeline still serves reads of its durable WAL, and its
  :meth:`snapshot` reports only what is durable (the acceptor's in-memory view already
  counted the failed effects as done). A restart reloads the truth from disk; so does
  :meth:`revive`, which the registry calls once a shortage (full disk, quota, no free
  descriptor: :attr:`revivable`) is over.
* Waiters use :attr:`changed` (a :class:`Watch`): it fires after every processed message,
  peer update that says something new, receiver change and on deletion.
* What peers are told about this timeline (term, positions, horizons) may change only in
  :meth:`process`, :meth:`bump_term`, :meth:`record_peer_info` (commit_lsn and horizons
  follow peers) and on deletion: those report to the node's :class:`PeerHub`, which feeds
  the peer exchange. Peer news alone is not reported (it would echo between nodes).
* Peers' entries are kept as received; their freshness is judged through the hub
  (:meth:`current_peers`, :meth:`alive_peers`), since an unchanged peer only confirms
  liveness node-wide instead of resending every timeline.
* Tasks that serve this timeline (connections, recovery) run inside :meth:`attach`, which
  cancels them when the timeline is deleted.
* Recovery yields to proposers: a message processed with ``recovery=True`` (the recovery
  engine's) is refused with ``ProposerArrived`` while a proposer is *connected*
  (:attr:`connected_proposers`: greeted us, or voted/streams in a term not below ours). The
  check is made under ``lock``, in the same step as the message, so a recovery message can
  never slip in between a proposer's Greeting and its VoteRequest, or between its vote and
  its ProposerElected: the proposer never sees a refusal that recovery caused.
"""

from __future__ import annotations

import errno
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Literal, Protocol

import attrs
import trio

from ..core import (
    Acceptor,
    AcceptorError,
    AcceptorMessage,
    AppendRequest,
    DiskUsageExceeded,
    FatalTimelineError,
    FlushEffect,
    FlushWal,
    Greeting,
    Lsn,
    NodeId,
    PeerInfo,
    PeerUpdate,
    PersistEffect,
    PersistentState,
    ProposerArrived,
    ProposerElected,
    SafekeeperError,
    Step,
    StorageError,
    TenantTimelineId,
    Term,
    TermHistory,
    TermLsn,
    TruncateEffect,
    VoteRequest,
    WalRemoved,
    WriteEffect,
    encode_state,
)
from ..storage import AsyncWalStore, ControlFileStore
from ._changes import ChangeFeed
from ._consumers import ConsumerPositions
from ._disk_guard import DiskGuard
from ._peers import PeerHub
from ._watch import Watch

__all__ = [
    "TRANSIENT_ERRNOS",
    "Receiver",
    "TermMismatch",
    "Timeline",
    "TimelineBroken",
    "TimelineObserver",
    "TimelineSnapshot",
    "describe_storage_failure",
]

log = logging.getLogger(__name__)

ReceiverKind = Literal["proposer", "recovery"]
ReceiverStatus = Literal["connected", "greeted", "voted", "streaming"]


class TimelineObserver(Protocol):
    """Node-wide counters fed by every timeline's write path (metrics, low cardinality)."""

    def wal_written(self, n: int) -> None: ...

    def wal_flushed(self) -> None: ...


class _NoObserver:
    def wal_written(self, n: int) -> None:
        pass

    def wal_flushed(self) -> None:
        pass


class TimelineBroken(SafekeeperError):
    """The timeline has stopped taking writes (storage failure or fatal protocol error).

    ``reason`` is why it stopped, without the timeline id (close reasons are short).
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason if reason is not None else message


_DISK_ERRNOS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EIO: "I/O error",
    errno.EROFS: "read-only file system",
    errno.EMFILE: "too many open files",
    errno.ENFILE: "too many open files in the system",
}
TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE})
"""Failures that pass by themselves (space freed, descriptors closed): a timeline broken by
one reloads itself from disk once the resource is back (the registry retries). EMFILE and
ENFILE are not disk faults at all; EIO, EROFS and corruption need an operator."""


def storage_errno(error: BaseException) -> int | None:
    """The ``errno`` of the ``OSError`` in ``error`` or its chain of causes, if any."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__
    return cause.errno if cause is not None else None


def describe_storage_failure(error: BaseException) -> str:
    """``"<kind>: <error>"`` where kind names the fault (``disk full``, ``I/O error``,
    ``too many open files``, ...) found in ``error`` or its cause, else ``storage
    failure``."""
    kind = _DISK_ERRNOS.get(storage_errno(error) or 0, "storage failure")
    return f"{kind}: {error}"


class TermMismatch(SafekeeperError):
    """A term-checked WAL read found a different current term."""

    def __init__(self, requested: Term, current: Term) -> None:
        super().__init__(f"failed to acquire term {requested}, current term {current}")
        self.requested = requested
        self.current = current


@attrs.define
class Receiver:
    """A connection pushing WAL into this timeline (a proposer, or our own recovery).

    A proposer's ``status`` follows its handshake: ``connected`` → ``greeted`` (its
    Greeting arrived) → ``voted`` (its VoteRequest was answered) → ``streaming`` (its
    ProposerElected passed); ``term`` is the term of its VoteRequest once it asked."""

    id: int
    kind: ReceiverKind
    remote: str
    status: ReceiverStatus = "connected"
    term: Term | None = None


@attrs.frozen
class TimelineSnapshot:
    """A consistent copy of everything status, peer exchange and recovery read."""

    ttid: TenantTimelineId
    node_id: NodeId
    term: Term
    last_log_term: Term
    term_history: TermHistory
    flush_lsn: Lsn
    write_lsn: Lsn
    commit_lsn: Lsn
    timeline_start_lsn: Lsn
    local_start_lsn: Lsn
    backup_lsn: Lsn
    peer_horizon_lsn: Lsn
    remote_consistent_lsn: Lsn
    wal_seg_size: int
    pg_version: int
    system_id: int
    connected_proposers: int
    broken: str | None


_receiver_ids = itertools.count(1)


def _peer_update(info: PeerInfo) -> PeerUpdate:
    return PeerUpdate(
        last_log_term=info.last_log_term,
        commit_lsn=info.commit_lsn,
        backup_lsn=info.backup_lsn,
        peer_horizon_lsn=info.peer_horizon_lsn,
        remote_consistent_lsn=info.remote_consistent_lsn,
    )


def _same_content(a: PeerInfo, b: PeerInfo) -> bool:
    """Equal but for ``received_at``."""
    return (
        a.term == b.term
        and a.last_log_term == b.last_log_term
        and a.flush_lsn == b.flush_lsn
        and a.commit_lsn == b.commit_lsn
        and a.http_addr == b.http_addr
        and a.wal_addr == b.wal_addr
        and a.backup_lsn == b.backup_lsn
        and a.peer_horizon_lsn == b.peer_horizon_lsn
        and a.remote_consistent_lsn == b.remote_consistent_lsn
        and a.local_start_lsn == b.local_start_lsn
    )


class Timeline:
    """See the module docstring. Build with :meth:`from_stores`."""

    def __init__(
        self,
        ttid: TenantTimelineId,
        acceptor: Acceptor,
        store: AsyncWalStore,
        control: ControlFileStore,
        *,
        inline: bool = False,
        observer: TimelineObserver | None = None,
        hub: PeerHub | None = None,
        feed: ChangeFeed | None = None,
        guard: DiskGuard | None = None,
    ) -> None:
        self.ttid = ttid
        self.guard = guard
        """The node's disk guard: appends carrying WAL pass :meth:`DiskGuard.admit` first."""
        self.observer: TimelineObserver = observer or _NoObserver()
        self._inline = inline
        self.acceptor = acceptor
        self.store = store
        self.control = control
        self.lock = trio.Lock()
        self.hub = hub if hub is not None else PeerHub()
        """Node-wide peer liveness and change feed (a private one if not given)."""
        self._feed = feed
        self.changed = Watch(None if feed is None else self._report_change)
        """Fires on every change; a node's :class:`ChangeFeed` (if given) hears of each."""
        self.peers: dict[NodeId, PeerInfo] = {}
        self.receivers: dict[int, Receiver] = {}
        self.consumers = ConsumerPositions()
        """PostgreSQL replication clients streaming from this timeline (the pg port's);
        their positions hold WAL back from removal (``_consumers`` rule K3)."""
        self.broken: str | None = None
        self.broken_errno: int | None = None
        """The ``errno`` behind :attr:`broken` when a storage call failed (else ``None``)."""
        self.on_break: Callable[[Timeline], None] | None = None
        """Called once each time the timeline breaks (the registry schedules a reload
        when the cause is in :data:`TRANSIENT_ERRNOS`)."""
        self.deleted = False
        self._durable_state = acceptor.persisted  # last control-file body known on disk
        self._attached: set[trio.CancelScope] = set()
        self._removal_holds: dict[int, Lsn] = {}
        """WAL a snapshot is streaming from (see :meth:`hold_removal`), by hold id."""
        self.recovery_messages = 0
        """Messages processed for recovery (``recovery=True``) since start."""
        self.recovery_yields = 0
        """Recovery messages refused because a proposer was connected."""
        self.hub.timeline_changed(ttid)  # a new (or newly loaded) timeline is news to peers

    def _report_change(self) -> None:
        # A deleted timeline's last stragglers (connections ending) are not news: the
        # registry reports the deletion itself.
        if self._feed is not None and not self.deleted:
            self._feed.record(self.ttid)

    @classmethod
    def from_stores(
        cls,
        node_id: NodeId,
        state: PersistentState,
        store: AsyncWalStore,
        control: ControlFileStore,
        *,
        inline: bool = False,
        observer: TimelineObserver | None = None,
        hub: PeerHub | None = None,
        feed: ChangeFeed | None = None,
        guard: DiskGuard | None = None,
    ) -> Timeline:
        """``inline=True`` (memory twins only) runs control-file writes without a thread."""
        acceptor = Acceptor(node_id, state, write_lsn=store.write_lsn, flush_lsn=store.flush_lsn)
        ttid = TenantTimelineId(state.tenant_id, state.timeline_id)
        return cls(ttid, acceptor, store, control, inline=inline, observer=observer, hub=hub,
                   feed=feed, guard=guard)

    # ---- the one write path -------------------------------------------------------------

    def _recovery_must_yield(self) -> bool:
        """Is recovery refused now (a proposer is connected)? A method so that the
        simulator's planted bug ``recovery_ignores_proposer`` can override exactly this."""
        return bool(self.connected_proposers)

    async def process(
        self,
        msg: Greeting | VoteRequest | ProposerElected | AppendRequest | FlushWal,
        *,
        flush: bool = True,
        recovery: bool = False,
    ) -> AcceptorMessage | None:
        """Handle one proposer message and return the reply (``None`` if it has none).

        Raises ``AcceptorError`` for a refusal (nothing changed), :class:`TimelineBroken`
        if the timeline is (or becomes) broken, ``DiskUsageExceeded`` for an append
        carrying WAL while the disk guard refuses (no WAL written, the timeline goes on;
        the append's header is still taken, as an empty append would be: its
        ``commit_lsn`` lets committed WAL be archived and removed, which frees the space)
        and, with ``recovery`` (the recovery engine's messages), ``ProposerArrived`` while
        a proposer is connected (nothing changed).
        """
        async with self.lock:
            self._check_usable()
            if recovery:
                if self._recovery_must_yield():
                    self.recovery_yields += 1
                    raise ProposerArrived("a proposer is connected to this node")
                self.recovery_messages += 1
            refused: DiskUsageExceeded | None = None
            if self.guard is not None and isinstance(msg, AppendRequest) and msg.data:
                try:
                    await self.guard.admit(len(msg.data))
                except DiskUsageExceeded as e:
                    # U2: no WAL, but the header: with nothing else getting through, the
                    # commit_lsn it carries is what lets archiving and removal free space.
                    refused = e
                    msg = attrs.evolve(msg, data=b"")
            a = self.acceptor
            flush_before, persisted_before = a.flush_lsn, a.persisted
            try:
                step = a.handle(msg, flush=flush)
            except FatalTimelineError as e:
                self._break(str(e))
                raise TimelineBroken(f"timeline {self.ttid} stopped: {e}", reason=str(e)) from e
            except AcceptorError:
                if refused is not None:
                    raise refused from None  # the header alone was refused: say why WAL was
                raise
            await self._apply(step)
            if self.peers and (a.flush_lsn != flush_before or a.persisted is not persisted_before):
                await self._follow_peers()
        self.hub.timeline_changed(self.ttid)
        self.changed.notify()
        if refused is not None:
            raise refused
        return step.reply

    async def _follow_peers(self) -> None:
        """Under the lock, after our flush_lsn or history moved: a peer's commit_lsn that
        did not count before (other last_log_term, beyond our flush) may count now, and
        peers resend their info only when it changes."""
        a = self.acceptor
        last_log_term = a.last_log_term
        for info in list(self.peers.values()):
            if self.broken is not None:
                return
            if info.last_log_term == last_log_term and info.commit_lsn > a.commit_lsn:
                await self._apply(a.on_peer_update(_peer_update(info)))

    async def record_peer_info(self, info: PeerInfo) -> None:
        """Store a peer's info (stamped by the caller) and let commit_lsn follow it.

        Waiters are woken only when the info says something new (or the peer was silent
        for a while and may have been counted dead): a full resync repeats every
        timeline's info, and waking 10,000 idle recovery supervisors for nothing is the
        cost the event-driven design exists to avoid. Unchanged info skips the acceptor
        too (:meth:`process` re-applies peers' commit_lsn when our own position moves).
        """
        old = self.peers.get(info.node_id)
        self.peers[info.node_id] = info
        a = self.acceptor
        if old is None and info.position < TermLsn(a.last_log_term, a.flush_lsn):
            # A peer new to this timeline (created there late, after it was down) that
            # lags us needs our info to find a donor: publish it now. An idle timeline
            # would otherwise reach it only with the next full resync, minutes away.
            self.hub.timeline_changed(self.ttid)
        if old is not None and _same_content(old, info):
            if info.received_at - self.hub.last_heard(old) > self.hub.silence_wake:
                self.changed.notify()
            else:
                await trio.lowlevel.checkpoint()
            return
        if self.broken is None and not self.deleted:
            async with self.lock:
                if self.broken is None:
                    a = self.acceptor
                    before = (a.commit_lsn, a.backup_lsn, a.peer_horizon_lsn,
                              a.remote_consistent_lsn)
                    step = a.on_peer_update(_peer_update(info))
                    if step.effects:
                        await self._apply(step)
                    if before != (a.commit_lsn, a.backup_lsn, a.peer_horizon_lsn,
                                  a.remote_consistent_lsn):
                        self.hub.timeline_changed(self.ttid)
        self.changed.notify()

    def peer_is_ahead(self, node_id: NodeId) -> bool:
        """Whether that peer's entry is ahead of our (last_log_term, flush_lsn): only
        then can it matter to recovery that the peer is alive."""
        info = self.peers.get(node_id)
        a = self.acceptor
        return info is not None and info.position > TermLsn(a.last_log_term, a.flush_lsn)

    def forget_peer(self, node_id: NodeId) -> None:
        """Drop a peer's entry (it no longer has this timeline)."""
        if self.peers.pop(node_id, None) is not None:
            self.changed.notify()

    async def bump_term(self, term: Term | None = None) -> Term:
        """Raise the term (operators, tests). Returns the new term."""
        async with self.lock:
            self._check_usable()
            await self._apply(self.acceptor.bump_term(term))
        self.hub.timeline_changed(self.ttid)
        self.changed.notify()
        return self.acceptor.term

    async def advance_backup_lsn(self, lsn: Lsn) -> None:
        """This node archived (and verified) WAL up to ``lsn``: raise ``backup_lsn`` and
        persist it before returning, then tell peers. A lower ``lsn`` changes nothing.
        Raises :class:`TimelineBroken` if the timeline is (or becomes) broken."""
        async with self.lock:
            self._check_usable()
            step = self.acceptor.advance_backup_lsn(lsn)
            if not step.effects:
                return
            await self._apply(step)
        self.hub.timeline_changed(self.ttid)
        self.changed.notify()

    async def remove_wal_before(self, lsn: Lsn) -> int:
        """Remove this node's WAL below ``lsn`` (a segment start at or below flush_lsn),
        crash-safely (``WalStore.remove_before``); returns the segment files removed.

        Under the lock, so a WAL sender's read never races the removal: a read below the
        new start raises ``WalRemoved`` (see :meth:`read_wal`). The caller decides the
        horizon (core ``removal_horizon``). Raises ``StorageError`` if removal failed (the
        timeline keeps serving: nothing it acknowledged is touched) and
        :class:`TimelineBroken` if the timeline is broken or deleted.
        """
        async with self.lock:
            self._check_usable()
            if self._removal_holds:  # a snapshot streams from there: remove nothing above
                held = min(self._removal_holds.values())
                lsn = min(lsn, Lsn(int(held) - int(held) % self.store.seg_size))
            if lsn <= self.store.start_lsn:
                return 0
            removed = await self.store.remove_before(lsn)
        self.changed.notify()
        return removed

    @asynccontextmanager
    async def hold_removal(self) -> AsyncIterator[tuple[TimelineSnapshot, Lsn]]:
        """Keep every byte of WAL this node now holds until the block ends (a snapshot
        streams it to a peer): yields a :meth:`snapshot` and the store's start, taken under
        the lock in the same step as the hold, so no removal can slip in between.
        :meth:`remove_wal_before` removes nothing at or above a held position meanwhile;
        the lifecycle is woken when the hold ends. Raises :class:`TimelineBroken` if the
        timeline was deleted."""
        hold_id = next(_receiver_ids)
        async with self.lock:
            self._check_readable()
            start = self.store.start_lsn
            self._removal_holds[hold_id] = start
            snap = self.snapshot()
        try:
            yield snap, start
        finally:
            del self._removal_holds[hold_id]
            self.changed.notify()

    @property
    def removal_holds(self) -> int:
        """How many snapshots hold this timeline's WAL now."""
        return len(self._removal_holds)

    async def persist_in_memory(self) -> None:
        """Persist in-memory horizons (periodic, and at shutdown)."""
        async with self.lock:
            if self.broken is None and not self.deleted:
                await self._apply(self.acceptor.persist_in_memory())

    async def _apply(self, step: Step) -> None:
        # The acceptor's in-memory state already counts these effects as done, so they must
        # run to completion: a cancellation here (a recovery attempt or proposer connection
        # torn down) would otherwise drop buffered WAL while flush_lsn still claims it.
        # Disk work is bounded; the shield only delays a cancel until it is finished.
        with trio.CancelScope(shield=True):
            await self._apply_effects(step)

    async def _apply_effects(self, step: Step) -> None:
        try:
            for effect in step.effects:
                match effect:
                    case WriteEffect():
                        await self.store.write(effect.lsn, effect.data)
                        self.observer.wal_written(len(effect.data))
                    case FlushEffect():
                        await self.store.flush()
                        self.observer.wal_flushed()
                    case TruncateEffect():
                        await self.store.truncate(effect.lsn)
                    case PersistEffect():
                        body = encode_state(effect.state)
                        if self._inline:
                            await trio.lowlevel.checkpoint()
                            self.control.persist(body)
                        else:
                            await trio.to_thread.run_sync(self.control.persist, body)
                        self._durable_state = effect.state
        except (OSError, StorageError) as e:
            reason = describe_storage_failure(e)
            self._break(reason, storage_errno(e))
            raise TimelineBroken(f"timeline {self.ttid} stopped: {reason}", reason=reason) from e

    def _check_usable(self) -> None:
        if self.deleted:
            raise TimelineBroken(f"timeline {self.ttid} was deleted")
        if self.broken is not None:
            raise TimelineBroken(
                f"timeline {self.ttid} is stopped: {self.broken}", reason=self.broken
            )

    def _break(self, reason: str, errno_: int | None = None) -> None:
        if self.broken is None:
            log.error("timeline %s stopped: %s", self.ttid, reason)
            self.broken = reason
            self.broken_errno = errno_
            if self.on_break is not None:
                self.on_break(self)
        self.changed.notify()

    @property
    def revivable(self) -> bool:
        """Whether it is broken by a failure that passes by itself (full disk, quota, no
        free file descriptors): then :meth:`revive` may bring it back."""
        return self.broken is not None and self.broken_errno in TRANSIENT_ERRNOS

    async def revive(
        self, state: PersistentState, store: AsyncWalStore, control: ControlFileStore
    ) -> bool:
        """Take writes again from freshly reloaded storage, as a restart would.

        ``state``/``store``/``control`` must have been loaded from disk *after* the
        failure: the acceptor is rebuilt from them (what is durable), so nothing the
        failed effects claimed survives. The old store is closed. Returns ``False`` (and
        closes ``store`` instead) when the timeline is not broken any more or was deleted.
        """
        reason = self.broken
        async with self.lock:
            if self.broken is None or self.deleted:
                stale = store
            else:
                stale, reason = self.store, self.broken
                self.acceptor = Acceptor(
                    self.acceptor.node_id, state, write_lsn=store.write_lsn,
                    flush_lsn=store.flush_lsn,
                )
                self.store, self.control = store, control
                self._durable_state = state
                self.broken = self.broken_errno = None
        if stale.store is not self.store.store:  # a memory twin reopens as the same store
            with trio.CancelScope(shield=True):  # never leak either store's descriptors
                await stale.aclose()
        if stale is store:
            return False
        log.info("timeline %s takes writes again (reloaded from disk after: %s)",
                 self.ttid, reason)
        self.hub.timeline_changed(self.ttid)
        self.changed.notify()
        return True

    # ---- reads --------------------------------------------------------------------------

    async def read_wal(self, start: Lsn, max_bytes: int, *, term: Term | None = None) -> bytes:
        """Up to ``max_bytes`` of durable WAL from ``start`` (never crossing a segment).

        With ``term``, the current term must equal it, checked under the lock so WAL cannot
        be truncated mid-read (raises :class:`TermMismatch`). WAL below the store's start
        (removed) raises ``WalRemoved``, never a short or empty answer.
        """
        async with self.lock:
            self._check_readable()
            if term is not None and self.term != term:
                raise TermMismatch(term, self.term)
            if start < self.store.start_lsn:
                raise WalRemoved(
                    f"requested WAL at {start} was removed: this node's WAL starts at "
                    f"{self.store.start_lsn}")
            return await self.store.read(start, max_bytes)

    async def digest(self, from_lsn: Lsn, until_lsn: Lsn) -> str:
        async with self.lock:
            self._check_readable()
            return await self.store.digest(from_lsn, until_lsn)

    def _check_readable(self) -> None:
        if self.deleted:
            raise TimelineBroken(f"timeline {self.ttid} was deleted")

    @property
    def term(self) -> Term:
        """The current term (the durable one if the timeline is broken)."""
        return self.acceptor.term if self.broken is None else self._durable_state.term

    @property
    def flush_lsn(self) -> Lsn:
        """End of the WAL this timeline stands behind: the acceptor's flush position, or
        the store's durable one if the timeline is broken (see :meth:`snapshot`)."""
        flush = self.acceptor.flush_lsn
        if self.broken is not None:
            flush = max(min(flush, self.store.flush_lsn), self._durable_state.timeline_start_lsn)
        return flush

    @property
    def wal_disk_bytes(self) -> int:
        """Bytes of this timeline's WAL segment files: every segment from the store's start
        to its write position, each created full-size (preallocated)."""
        store = self.store
        seg = store.seg_size
        first = int(store.start_lsn) // seg
        last = max(first, (int(store.write_lsn) - 1) // seg)
        return (last - first + 1) * seg

    @property
    def commit_lsn(self) -> Lsn:
        """The commit position, never past :attr:`flush_lsn`."""
        return min(self.acceptor.commit_lsn, self.flush_lsn)

    def snapshot(self) -> TimelineSnapshot:
        """Positions and state for status, peer exchange and recovery.

        A broken timeline reports what is durable: the store's flush position and the last
        control file persisted, because its acceptor already counted the failed effects as
        done (peers must not pick it as a donor for WAL it does not have).
        """
        a = self.acceptor
        st = a.persisted
        term, history, flush, write = a.term, a.term_history, a.flush_lsn, a.write_lsn
        last_log_term, commit = a.last_log_term, a.commit_lsn
        if self.broken is not None:
            st = self._durable_state
            flush = write = self.flush_lsn
            term, history = st.term, st.term_history
            last_log_term = st.term_history.last_log_term(flush)
            commit = self.commit_lsn
        return TimelineSnapshot(
            ttid=self.ttid,
            node_id=a.node_id,
            term=term,
            last_log_term=last_log_term,
            term_history=history,
            flush_lsn=flush,
            write_lsn=write,
            commit_lsn=commit,
            timeline_start_lsn=st.timeline_start_lsn,
            local_start_lsn=st.local_start_lsn,
            backup_lsn=a.backup_lsn,
            peer_horizon_lsn=a.peer_horizon_lsn,
            remote_consistent_lsn=a.remote_consistent_lsn,
            wal_seg_size=st.server.wal_seg_size,
            pg_version=st.server.pg_version,
            system_id=st.server.system_id,
            connected_proposers=self.connected_proposers,
            broken=self.broken,
        )

    def current_peers(self) -> tuple[PeerInfo, ...]:
        """Every peer's entry, ``received_at`` = when it was last known current."""
        return tuple(self.hub.current(p) for p in self.peers.values())

    def alive_peers(self, now: float, heartbeat_timeout: float) -> list[PeerInfo]:
        return [p for p in self.current_peers() if now - p.received_at <= heartbeat_timeout]

    @property
    def needs_persist(self) -> bool:
        """Whether :meth:`persist_in_memory` has anything to write (cheap, no lock)."""
        return self.broken is None and not self.deleted and self.acceptor.in_memory_ahead

    # ---- receivers and lifetime ---------------------------------------------------------

    @property
    def connected_proposers(self) -> int:
        """Proposers recovery must keep off this node: every one that greeted us and has
        not voted yet, and every one that voted or streams in a term not below ours (one
        left behind by a newer term no longer counts: it will be refused anyway)."""
        term = self.acceptor.term
        return sum(
            1
            for r in self.receivers.values()
            if r.kind == "proposer"
            and (r.status == "greeted" or (r.status != "connected" and (r.term or 0) >= term))
        )

    @asynccontextmanager
    async def receiver(self, kind: ReceiverKind, remote: str) -> AsyncIterator[Receiver]:
        """Register a WAL-pushing connection for its lifetime."""
        r = Receiver(next(_receiver_ids), kind, remote)
        self.receivers[r.id] = r
        self.changed.notify()
        try:
            yield r
        finally:
            del self.receivers[r.id]
            self.changed.notify()

    def mark(self, receiver: Receiver, status: ReceiverStatus, term: Term | None = None) -> None:
        """Record a proposer's handshake step (see :class:`Receiver`)."""
        new_term = receiver.term if term is None else term
        if (receiver.status, receiver.term) != (status, new_term):
            receiver.status, receiver.term = status, new_term
            self.changed.notify()

    @asynccontextmanager
    async def attach(self) -> AsyncIterator[trio.CancelScope]:
        """Run a task for this timeline; deleting the timeline cancels the block."""
        self._check_readable()
        with trio.CancelScope() as scope:
            self._attached.add(scope)
            try:
                yield scope
            finally:
                self._attached.discard(scope)

    def mark_deleted(self) -> None:
        """Stop everything attached to this timeline; the registry removes the data."""
        self.deleted = True
        for scope in list(self._attached):
            scope.cancel()
        self.hub.timeline_changed(self.ttid)
        self.changed.notify()
