"""Pulling a timeline from peers (bootstrap): the receiver's side, node-wide.

:class:`PullService` runs every pull of a node (``POST …/pull``, ``timeline pull``, the
automatic puller). One pull of a timeline:

1. If the node has the timeline, nothing happens: the answer says ``exists`` (a repeated
   pull is a no-op). If a pull of it runs already, :class:`PullInProgress` (HTTP 409).
2. Ask every source (peer HTTP URL) for its status of the timeline, concurrently; one
   that is down or lacks the timeline is left out (and named in the log line).
3. Choose the donor by core rule B1 (``(last_log_term, flush_lsn)``, never the term),
   stream its snapshot (``GET …/snapshot``) and install it (``receive_snapshot``: every
   frame checked, built aside, installed in one rename). The installed term is the
   highest term any source reported, not only the donor's: a node that lost its disk
   lost its votes too, and must not vote again in a term a peer has moved past.
4. A donor whose term moved during the snapshot (``PullTermChanged``) is asked again at
   once: the pull is *redone*. A donor that fails (unreachable, killed mid-stream, a bad
   frame) is skipped for the rest of this pull while another source can serve; the pull
   retries after a back-off (``retry_min`` doubling to ``retry_max``), at most
   ``max_attempts`` times, then fails with the last error.

Every pull has a :class:`PullStatus` (``GET …/pull``, and the ``pull`` object of the
timeline status once it exists): state, donor, bytes, attempts, the last error. Metrics:
``safekeeper_pull_attempts_total{outcome}``, ``safekeeper_pull_bytes_total``,
``safekeeper_pulls_active``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Final, Literal

import attrs
import trio

from ..core import (
    NoPullDonor,
    PullCandidate,
    PullDonorChoice,
    PullError,
    PullInProgress,
    PullTermChanged,
    SafekeeperError,
    SnapshotHeader,
    StorageError,
    TenantTimelineId,
    Term,
    choose_pull_donor,
)
from ..timeline import TimelineConflict, TimelineRegistry, receive_snapshot
from ._http_client import HttpError, SafekeeperClient
from ._metrics import NodeMetrics

__all__ = ["PullConfig", "PullService", "PullState", "PullStatus"]

log = logging.getLogger(__name__)

PullState = Literal["choosing_donor", "streaming", "waiting", "done", "exists", "failed"]
_FINISHED: Final = frozenset({"done", "exists", "failed"})


@attrs.frozen(kw_only=True)
class PullConfig:
    """``token``: the JWT sent to donors (``--token-file``); ``timeout``: seconds for
    connecting and for each read; ``max_attempts`` / ``retry_min`` / ``retry_max``: the
    retry policy of step 4; ``max_rate``: bytes per second a pull may take (``None``:
    as fast as it goes; a request may ask for less)."""

    token: str | None = None
    timeout: float = 10.0
    max_attempts: int = 5
    retry_min: float = 0.5
    retry_max: float = 10.0
    max_rate: int | None = None


@attrs.define
class PullStatus:
    """One pull of one timeline, as ``GET …/pull`` and the timeline status show it."""

    ttid: TenantTimelineId
    sources: tuple[str, ...]
    state: PullState = "choosing_donor"
    donor: str | None = None
    donor_node_id: int | None = None
    start_lsn: str | None = None
    end_lsn: str | None = None
    bytes: int = 0
    """WAL bytes received in the current attempt."""
    total_bytes: int | None = None
    """WAL bytes the current attempt's snapshot holds (``end_lsn - start_lsn``)."""
    attempts: int = 0
    term_changes: int = 0
    """Attempts redone because the donor's term moved during the snapshot."""
    choice: str | None = None
    """Core rule B1's log line: the candidates and why the donor won."""
    started_at: float = attrs.field(factory=time.time)
    finished_at: float | None = None
    last_error: str | None = None
    last_error_kind: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in _FINISHED

    def to_json(self) -> dict[str, object]:
        return {
            "tenant_id": str(self.ttid.tenant_id),
            "timeline_id": str(self.ttid.timeline_id),
            "state": self.state,
            "sources": list(self.sources),
            "donor": self.donor,
            "donor_node_id": self.donor_node_id,
            "start_lsn": self.start_lsn,
            "end_lsn": self.end_lsn,
            "bytes": self.bytes,
            "total_bytes": self.total_bytes,
            "attempts": self.attempts,
            "term_changes": self.term_changes,
            "choice": self.choice,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "last_error": self.last_error,
            "last_error_kind": self.last_error_kind,
        }


class PullService:
    """Every pull of one node (module docstring). ``await nursery.start(service.serve)``
    before :meth:`start`; :meth:`pull` runs one in the caller's task."""

    def __init__(self, registry: TimelineRegistry, config: PullConfig | None = None, *,
                 metrics: NodeMetrics | None = None) -> None:
        self.registry = registry
        self.config = config if config is not None else PullConfig()
        self.metrics = metrics
        self.statuses: dict[TenantTimelineId, PullStatus] = {}
        """The last pull of each timeline (running or finished), kept for the status."""
        self._running: set[TenantTimelineId] = set()
        self._nursery: trio.Nursery | None = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Run background pulls (:meth:`start`) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def running(self, ttid: TenantTimelineId) -> bool:
        return ttid in self._running

    def start(self, ttid: TenantTimelineId, sources: Sequence[str], *,
              max_rate: int | None = None) -> PullStatus:
        """Begin a pull in the background and return its status at once (``exists`` if
        the node has the timeline). Raises :class:`PullInProgress` if one runs."""
        status = self._begin(ttid, sources)
        if not status.finished:
            assert self._nursery is not None, "PullService is not serving"
            self._nursery.start_soon(self._run, status, max_rate)
        return status

    async def pull(self, ttid: TenantTimelineId, sources: Sequence[str], *,
                   max_rate: int | None = None) -> PullStatus:
        """Pull in this task; returns the finished status (``done``, ``exists`` or
        ``failed``). Raises :class:`PullInProgress` if one runs."""
        status = self._begin(ttid, sources)
        if not status.finished:
            await self._run(status, max_rate)
        return status

    def _begin(self, ttid: TenantTimelineId, sources: Sequence[str]) -> PullStatus:
        if ttid in self._running:
            raise PullInProgress(
                f"timeline {ttid} is being pulled already (GET its /pull for progress)")
        status = PullStatus(ttid, tuple(sources))
        if ttid in self.registry.timelines or ttid in self.registry.broken:
            status.state = "exists"
            status.finished_at = time.time()
            log.info("pull of %s: the timeline is on this node already, nothing to do", ttid)
            return status
        if not sources:
            raise NoPullDonor(f"pull of {ttid}: no source given")
        self._running.add(ttid)
        self.statuses[ttid] = status
        return status

    async def _run(self, status: PullStatus, max_rate: int | None) -> None:
        rate = _lower(max_rate, self.config.max_rate)
        if self.metrics is not None:
            self.metrics.pulls_active.inc()
        try:
            await self._attempts(status, rate)
        except Exception as e:  # a bug must fail this pull, never the node (Cancelled passes)
            log.exception("pull of %s failed unexpectedly", status.ttid)
            status.state = "failed"
            status.last_error, status.last_error_kind = f"{type(e).__name__}: {e}", "error"
            if self.metrics is not None:
                self.metrics.pull_finished("error")
        finally:
            status.finished_at = time.time()
            self._running.discard(status.ttid)
            if self.metrics is not None:
                self.metrics.pulls_active.dec()

    async def _attempts(self, status: PullStatus, rate: int | None) -> None:
        ttid = status.ttid
        cfg = self.config
        delay = cfg.retry_min
        failed: dict[str, str] = {}
        while status.attempts < cfg.max_attempts:
            status.attempts += 1
            status.state = "choosing_donor"
            status.bytes, status.total_bytes = 0, None
            try:
                choice = await self._choose(ttid, status.sources, failed)
                status.choice = str(choice)
                log.info("pull of %s, attempt %d: %s", ttid, status.attempts, choice)
                if choice.donor is None:
                    raise NoPullDonor(f"no source has timeline {ttid}: "
                                      f"{'; '.join(choice.unavailable) or 'none answered'}")
                status.donor = choice.donor.url
                status.state = "streaming"
                top_term = max(c.term for c in choice.ranked)
                await self._stream(choice.donor.url, status, rate, top_term)
            except TimelineConflict:
                status.state = "exists"
                log.info("pull of %s: the timeline appeared on this node meanwhile", ttid)
                return
            except PullTermChanged as e:
                status.term_changes += 1
                self._failed(status, e, "term_changed")
                log.warning("pull of %s from %s: %s; redoing the pull", ttid, status.donor, e)
                continue  # at once: the donor is fine, its snapshot was just overtaken
            except (HttpError, PullError, StorageError) as e:
                kind = e.outcome if isinstance(e, PullError) else (
                    "error" if isinstance(e, StorageError) else "donor_error")
                self._failed(status, e, kind)
                if status.donor is not None and not isinstance(e, NoPullDonor | StorageError):
                    failed[status.donor] = str(e)
                if status.attempts >= cfg.max_attempts:
                    break
                log.warning("pull of %s (attempt %d of %d) failed: %s; retrying in %.1fs",
                            ttid, status.attempts, cfg.max_attempts, e, delay)
                status.state = "waiting"
                await trio.sleep(delay)
                delay = min(delay * 2, cfg.retry_max)
                continue
            status.state = "done"
            status.last_error = status.last_error_kind = None
            if self.metrics is not None:
                self.metrics.pull_finished("done")
            log.info("pulled timeline %s from %s: %d bytes of WAL [%s, %s) in %d attempt(s)",
                     ttid, status.donor, status.bytes, status.start_lsn, status.end_lsn,
                     status.attempts)
            return
        status.state = "failed"
        log.error("pull of %s failed after %d attempts: %s", ttid, status.attempts,
                  status.last_error)

    def _failed(self, status: PullStatus, error: SafekeeperError, kind: str) -> None:
        status.last_error, status.last_error_kind = str(error), kind
        if self.metrics is not None:
            self.metrics.pull_finished(kind)

    async def _choose(self, ttid: TenantTimelineId, sources: Sequence[str],
                      failed: dict[str, str]) -> PullDonorChoice:
        """Step 2 and B1 over the sources that did not fail in this pull (all of them, if
        every one did: a donor that was down may be back)."""
        answers: dict[str, PullCandidate | str] = {}

        async def ask(url: str) -> None:
            try:
                async with SafekeeperClient(url, token=self.config.token,
                                            timeout=self.config.timeout) as client:
                    st = await client.typed_timeline_status(ttid)
            except HttpError as e:
                answers[url] = str(e)
                return
            except ValueError as e:  # a URL httpx cannot use (checked by the API before)
                answers[url] = f"{url}: {e}"
                return
            if st.broken is not None:
                answers[url] = f"{url}: timeline broken there: {st.broken}"
                return
            answers[url] = PullCandidate(url, st.term, st.last_log_term, st.flush_lsn)

        async with trio.open_nursery() as nursery:
            for url in sources:
                nursery.start_soon(ask, url)
        candidates = [a for a in (answers[u] for u in sources) if isinstance(a, PullCandidate)]
        usable = [c for c in candidates if c.url not in failed] or candidates
        down = [a for a in (answers[u] for u in sources) if isinstance(a, str)]
        down += [f"{u}: failed in this pull: {why}" for u, why in failed.items()
                 if any(c.url == u for c in candidates) and len(usable) < len(candidates)]
        return choose_pull_donor(usable, down)

    async def _stream(self, url: str, status: PullStatus, rate: int | None,
                      min_term: Term) -> None:
        def on_header(header: SnapshotHeader) -> None:
            status.donor_node_id = int(header.node_id)
            status.start_lsn, status.end_lsn = str(header.start_lsn), str(header.end_lsn)
            status.total_bytes = int(header.end_lsn) - int(header.start_lsn)

        def on_wal(n: int) -> None:
            status.bytes += n
            if self.metrics is not None:
                self.metrics.pull_bytes.inc(n)

        async with SafekeeperClient(url, token=self.config.token,
                                    timeout=self.config.timeout) as client, \
                client.snapshot(status.ttid) as body:
            stream = body if rate is None else _paced(body, rate)
            await receive_snapshot(self.registry, status.ttid, stream,
                                   on_header=on_header, on_wal=on_wal, min_term=min_term)


async def _paced(stream: AsyncIterator[bytes], rate: int) -> AsyncIterator[bytes]:
    """``stream`` at no more than ``rate`` bytes per second (on average)."""
    start = trio.current_time()
    total = 0
    async for chunk in stream:
        yield chunk
        total += len(chunk)
        await trio.sleep_until(start + total / rate)


def _lower(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)
