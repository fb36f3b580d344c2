"""Real processes: a node pulls a timeline from its peers (issue 15, docs/pull.md).

Every test runs three real nodes on loopback. Pulls that must be caught in the middle are
paced (``max_rate``), so a kill or a term bump lands while the snapshot streams; every
wait has a deadline.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import httpx
import pytest
import trio

from safekeeper_recovery.core import Lsn, TenantTimelineId
from safekeeper_recovery.testing import (
    DEFAULT_START_LSN,
    SEG_SIZE,
    Cluster,
    make_ttid,
    run_cli,
    wait_until,
)
from safekeeper_recovery.transport import HttpError, TimelineStatus

from .conftest import ClusterFactory
from .metrics_support import metric
from .recovery_support import assert_digests_equal, propose_args, wait_caught_up

pytestmark = pytest.mark.slow

MiB = 1 << 20


def tl_url(cluster: Cluster, node: int, ttid: TenantTimelineId, tail: str = "") -> str:
    return (f"{cluster[node].http_url}/v1/tenant/{ttid.tenant_id}/timeline/"
            f"{ttid.timeline_id}{tail}")


async def start_pull(cluster: Cluster, node: int, ttid: TenantTimelineId, sources: list[int],
                     max_rate: int | None = None) -> httpx.Response:
    body: dict[str, object] = {"from": [cluster[i].http_url for i in sources]}
    if max_rate is not None:
        body["max_rate"] = max_rate
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(tl_url(cluster, node, ttid, "/pull"), json=body)


async def pull_status(cluster: Cluster, node: int, ttid: TenantTimelineId) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(tl_url(cluster, node, ttid, "/pull"))
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert isinstance(doc, dict)
    return doc


async def wait_pull(cluster: Cluster, node: int, ttid: TenantTimelineId, *states: str,
                    timeout: float = 60) -> dict[str, object]:
    """Wait until the node's pull of ``ttid`` is in one of ``states``; return its status."""
    last: dict[str, object] = {}

    async def reached() -> bool:
        nonlocal last
        last = await pull_status(cluster, node, ttid)
        return last["state"] in states

    try:
        await wait_until(reached, timeout, message=f"node {node}'s pull to be {states}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last status {last}\n{cluster[node].stderr()[-3000:]}"
                             ) from None
    return last


async def wait_streaming(cluster: Cluster, node: int, ttid: TenantTimelineId) -> dict[
        str, object]:
    """Wait until the pull has received some WAL but not all of it."""
    last: dict[str, object] = {}

    async def mid() -> bool:
        nonlocal last
        last = await pull_status(cluster, node, ttid)
        assert last["state"] not in ("done", "failed"), f"pull ended too soon: {last}"
        return last["state"] == "streaming" and int(str(last["bytes"])) > 0

    await wait_until(mid, 30, message=f"node {node}'s pull to stream WAL")
    return last


def pull_of(status: TimelineStatus) -> dict[str, object]:
    """The ``pull`` object of a timeline status (the timeline was pulled)."""
    value = status.raw.get("pull")
    assert isinstance(value, dict), f"no pull object in {status.raw}"
    return value


def timeline_dirs(cluster: Cluster, node: int, ttid: TenantTimelineId) -> list[str]:
    tenant = cluster[node].data_dir / str(ttid.tenant_id)
    return sorted(p.name for p in tenant.iterdir()) if tenant.is_dir() else []


async def written(cluster: Cluster, ttid: TenantTimelineId, nbytes: str, ids: list[int]) -> Lsn:
    result = await cluster.propose(*propose_args(cluster, ttid, nbytes, ids=ids))
    assert result.returncode == 0, result.stderr
    return await cluster.flush_lsn(ids[0], ttid)


async def test_a_timeline_without_wal_is_pulled_and_pulling_it_again_is_a_no_op(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    await cluster.start()
    ttid = make_ttid(150)
    await cluster.create_timeline(ttid, ids=[1, 2])
    ids = ["--tenant-id", str(ttid.tenant_id), "--timeline-id", str(ttid.timeline_id)]
    sources = f"{cluster[1].http_url},{cluster[2].http_url}"
    first = await run_cli("timeline", "pull", "--node", cluster[3].http_url, *ids,
                          "--from", sources, "--no-progress")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["state"] == "done", first.stdout
    st = await cluster.timeline_status(3, ttid)
    assert (st.flush_lsn, st.timeline_start_lsn) == (DEFAULT_START_LSN, DEFAULT_START_LSN)
    assert pull_of(st)["state"] == "done", st.raw
    again = await run_cli("timeline", "pull", "--node", cluster[3].http_url, *ids,
                          "--from", sources, "--no-progress")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["state"] == "exists", again.stdout
    # A timeline no peer has: the pull retries with back-off, then fails with one line.
    nowhere = make_ttid(160)
    failed = await run_cli("timeline", "pull", "--node", cluster[3].http_url,
                           "--tenant-id", str(nowhere.tenant_id), "--timeline-id",
                           str(nowhere.timeline_id), "--from", sources, "--no-progress")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Error:" in failed.stderr
    assert "failed after 5 attempts: no source has timeline" in failed.stderr, failed.stderr
    # The pulled empty timeline takes WAL like any other: a proposer writes to all three.
    end = await written(cluster, ttid, "1MiB", [1, 2, 3])
    await wait_caught_up(cluster, 3, ttid, end, timeout=30)
    await assert_digests_equal(cluster, ttid, [1, 2, 3], DEFAULT_START_LSN, end)


async def test_the_donor_is_the_most_advanced_by_log_not_by_term_and_a_second_pull_is_refused(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    await cluster.start()
    ttid = make_ttid(151)
    await cluster.create_timeline(ttid, ids=[1, 2])
    end = await written(cluster, ttid, "4MiB", [1, 2])
    # Node 1 stops; node 2 alone takes more WAL in a newer term: it is the most advanced by
    # log. Node 1 comes back without recovery (so it stays behind) and gets by far the
    # highest term, which must not make it the donor (Neon #12778).
    await cluster[1].stop()
    top = await written(cluster, ttid, "2MiB", [2])
    assert top > end
    cluster[1].extra_args += ["--no-recovery"]
    await cluster[1].start()
    async with cluster[1].client() as client:
        await client.term_bump(ttid, 1000)
    assert (await cluster.timeline_status(1, ttid)).term == 1000
    assert await cluster.flush_lsn(1, ttid) == end

    answer = await start_pull(cluster, 3, ttid, [1, 2], max_rate=2 * MiB)
    assert answer.status_code == 202, answer.text
    second = await start_pull(cluster, 3, ttid, [1, 2])
    assert second.status_code == 409, second.text
    assert second.json()["code"] == "pull_in_progress", second.text
    done = await wait_pull(cluster, 3, ttid, "done", "failed")
    assert done["state"] == "done", done
    assert done["donor"] == cluster[2].http_url, done
    assert done["end_lsn"] == str(top), done
    await assert_digests_equal(cluster, ttid, [2, 3], DEFAULT_START_LSN, top)
    # The donor's log, but the highest term any peer reported: node 3 never votes again in
    # a term a peer has passed (its old votes were lost with its disk).
    pulled = await cluster.timeline_status(3, ttid)
    donor = await cluster.timeline_status(2, ttid)
    assert (pulled.term, pulled.term_history) == (1000, donor.term_history)
    # The pulled node counts its pull in its metrics.
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{cluster[3].http_url}/metrics")).text
    assert metric(text, "safekeeper_pull_attempts_total") == 1.0, text
    assert 'safekeeper_pull_attempts_total{outcome="done"} 1.0' in text, text
    assert metric(text, "safekeeper_pull_bytes_total") == int(top) - int(DEFAULT_START_LSN)


async def test_donor_killed_mid_pull_the_pull_retries_elsewhere(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    await cluster.start()
    ttid = make_ttid(152)
    await cluster.create_timeline(ttid, ids=[1, 2])
    end = await written(cluster, ttid, "6MiB", [1, 2])
    assert await cluster.flush_lsn(2, ttid) == end
    answer = await start_pull(cluster, 3, ttid, [1, 2], max_rate=1 * MiB)
    assert answer.status_code == 202, answer.text
    mid = await wait_streaming(cluster, 3, ttid)
    donor = 1 if mid["donor"] == cluster[1].http_url else 2
    await cluster[donor].kill()
    done = await wait_pull(cluster, 3, ttid, "done", "failed", timeout=90)
    assert done["state"] == "done", done
    other = 3 - donor
    assert done["donor"] == cluster[other].http_url, done
    assert int(str(done["attempts"])) >= 2, done
    assert done["end_lsn"] == str(end), done
    await assert_digests_equal(cluster, ttid, [other, 3], DEFAULT_START_LSN, end)
    # Nothing of the failed attempt is left beside the timeline.
    assert timeline_dirs(cluster, 3, ttid) == [str(ttid.timeline_id)]


async def test_a_term_change_on_the_donor_mid_pull_is_caught_and_the_pull_redone(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    await cluster.start()
    ttid = make_ttid(153)
    await cluster.create_timeline(ttid, ids=[1, 2])
    end = await written(cluster, ttid, "6MiB", [1, 2])
    answer = await start_pull(cluster, 3, ttid, [1], max_rate=1 * MiB)
    assert answer.status_code == 202, answer.text
    first = await wait_streaming(cluster, 3, ttid)
    async with cluster[1].client() as client:
        _, bumped = await client.term_bump(ttid)
    done = await wait_pull(cluster, 3, ttid, "done", "failed", timeout=90)
    assert done["state"] == "done", done
    assert int(str(done["term_changes"])) >= 1, done
    assert done["attempts"] == int(str(done["term_changes"])) + 1, done
    st = await cluster.timeline_status(3, ttid)
    assert st.term == bumped, (st.term, bumped, first)
    await assert_digests_equal(cluster, ttid, [1, 3], DEFAULT_START_LSN, end)


async def test_receiver_killed_at_random_moments_never_leaves_a_half_installed_timeline(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    await cluster.start()
    ttid = make_ttid(154)
    await cluster.create_timeline(ttid, ids=[1, 2])
    end = await written(cluster, ttid, "3MiB", [1, 2])
    rng = random.Random(154)
    seen = set()
    for round_ in range(4):
        answer = await start_pull(cluster, 3, ttid, [1, 2], max_rate=4 * MiB)
        assert answer.status_code in (200, 202), answer.text
        if answer.json()["state"] == "exists":
            break
        if round_ == 0:  # surely mid-stream: the staging exists
            await wait_streaming(cluster, 3, ttid)
        else:  # anywhere from before the header to after the install (3 MiB at 4 MiB/s)
            await run_pull_for(cluster, ttid, rng.uniform(0.0, 1.0))
        await cluster[3].kill()
        names = timeline_dirs(cluster, 3, ttid)
        seen.add(tuple(names))
        await cluster[3].start()
        # At start-up a staged leftover is gone; the timeline is there whole, or not at all.
        names = timeline_dirs(cluster, 3, ttid)
        assert all(not n.startswith(".pull-") for n in names), names
        async with cluster[3].client() as client:
            listing = await client.timelines()
        if listing:
            st = await cluster.timeline_status(3, ttid)
            assert st.flush_lsn == end, st
            await assert_digests_equal(cluster, ttid, [1, 3], DEFAULT_START_LSN, end)
    # The first kill caught a staging directory, so the clean-up was exercised.
    assert any(any(n.startswith(".pull-") for n in names) for names in seen), seen
    # And the pull completes in the end.
    answer = await start_pull(cluster, 3, ttid, [1, 2])
    if answer.json()["state"] != "exists":
        await wait_pull(cluster, 3, ttid, "done")
    await assert_digests_equal(cluster, ttid, [1, 2, 3], DEFAULT_START_LSN, end)


async def run_pull_for(cluster: Cluster, ttid: TenantTimelineId,
                                   seconds: float) -> None:
    """Let the pull run ``seconds`` (or until it ends, whichever is first)."""
    with trio.move_on_after(seconds):
        await wait_until(lambda: _finished(cluster, ttid), seconds + 1,
                         message="the pull to end")


async def _finished(cluster: Cluster, ttid: TenantTimelineId) -> bool:
    return (await pull_status(cluster, 3, ttid))["state"] in ("done", "failed")


async def test_a_wiped_node_restarted_with_its_id_pulls_and_catches_up_during_a_propose(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3, extra_args=["--pull-missing-timelines"])
    await cluster.start()
    ttids = [make_ttid(155), make_ttid(156)]
    for ttid in ttids:
        await cluster.create_timeline(ttid)
    await written(cluster, ttids[1], "2MiB", [1, 2, 3])
    propose = await cluster.start_propose(
        "propose155", *propose_args(cluster, ttids[0], "12MiB", "--rate", "2MiB"))
    await wait_until(lambda: _flushed_past(cluster, ttids[0], DEFAULT_START_LSN + 2 * MiB),
                     30, message="the propose to write 2 MiB")
    await cluster[3].kill()
    shutil.rmtree(cluster[3].data_dir)
    await cluster[3].start()
    for ttid in ttids:
        await wait_until(lambda t=ttid: _has(cluster, 3, t), 60,  # type: ignore[misc]
                         message=f"node 3 to pull {ttid}")
    assert (await propose.wait(timeout=120)).returncode == 0, propose.stderr()
    for ttid in ttids:
        target = await cluster.flush_lsn(1, ttid)
        commit = await cluster.commit_lsn(1, ttid)
        await wait_caught_up(cluster, 3, ttid, target, timeout=60)
        await assert_digests_equal(cluster, ttid, [1, 2, 3], DEFAULT_START_LSN, target)
        assert commit <= target
        assert pull_of(await cluster.timeline_status(3, ttid))["state"] == "done"


async def _flushed_past(cluster: Cluster, ttid: TenantTimelineId, lsn: int) -> bool:
    return int(await cluster.flush_lsn(1, ttid)) >= lsn


async def _has(cluster: Cluster, node: int, ttid: TenantTimelineId) -> bool:
    async with cluster[node].client() as client:
        listing = await client.timelines()
    return any(e.get("timeline_id") == str(ttid.timeline_id) for e in listing)


async def test_a_new_node_pulls_after_the_donors_removed_old_wal_and_catches_up(
    make_cluster: ClusterFactory, tmp_path: Path,
) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    cluster = make_cluster(3, extra_args=["--archive", f"file://{archive}"])
    await cluster.start()
    ttid = make_ttid(157)
    await cluster.create_timeline(ttid, ids=[1, 2])
    end = await written(cluster, ttid, "6MiB", [1, 2])

    async def removed() -> bool:
        for node in (1, 2):
            lc = (await cluster.timeline_status(node, ttid)).wal_lifecycle
            assert lc is not None
            if Lsn.parse(str(lc["removal_horizon"])) < DEFAULT_START_LSN + 4 * SEG_SIZE:
                return False
        return True

    await wait_until(removed, 30, message="nodes 1 and 2 to archive and remove old WAL")
    answer = await start_pull(cluster, 3, ttid, [1, 2])
    assert answer.status_code == 202, answer.text
    done = await wait_pull(cluster, 3, ttid, "done", "failed")
    assert done["state"] == "done", done
    start = Lsn.parse(str(done["start_lsn"]))
    assert start >= DEFAULT_START_LSN + 4 * SEG_SIZE, done
    st = await cluster.timeline_status(3, ttid)
    assert st.timeline_start_lsn == DEFAULT_START_LSN
    assert st.flush_lsn == end
    await assert_digests_equal(cluster, ttid, [1, 3], start, end)
    # More WAL goes to nodes 1 and 2 only: node 3 catches up by ordinary peer recovery.
    more = await written(cluster, ttid, "2500KiB", [1, 2])
    await wait_caught_up(cluster, 3, ttid, more, timeout=60)
    # Every node may have archived and removed more meanwhile (node 3 too, once caught
    # up), even between reading the horizons and asking the digests (409: removed): compare
    # what all of them still hold, from the new horizons if one moved in between.
    async def same_wal_held() -> bool:
        horizons = []
        for node in (1, 2, 3):
            lc = (await cluster.timeline_status(node, ttid)).wal_lifecycle
            assert lc is not None
            horizons.append(Lsn.parse(str(lc["removal_horizon"])))
        assert max(horizons) < more, horizons
        try:
            await assert_digests_equal(cluster, ttid, [1, 2, 3], max(horizons), more)
        except HttpError as e:
            if e.status != 409:
                raise
            return False
        return True

    await wait_until(same_wal_held, 30, message="the three nodes' digests of what they hold")


async def test_with_auth_on_a_pull_takes_a_peer_token_and_the_node_sends_its_own(
    make_cluster: ClusterFactory, tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    assert (await run_cli("keygen", "--out-dir", str(keys))).returncode == 0
    private = keys / "auth_private_key.pem"

    async def token(*args: str) -> str:
        made = await run_cli("token", "--private-key", str(private), *args)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()

    admin = await token("--scope", "safekeeperdata")
    ttid = make_ttid(158)
    tenant = await token("--scope", "tenant", "--tenant-id", str(ttid.tenant_id))
    (tmp_path / "peer.jwt").write_text(admin + "\n")
    cluster = make_cluster(3, extra_args=[
        "--auth-public-key", str(keys / "auth_public_key.pem"),
        "--token-file", str(tmp_path / "peer.jwt")], token=admin)
    await cluster.start()
    await cluster.create_timeline(ttid, ids=[1, 2])
    body = {"from": [cluster[1].http_url, cluster[2].http_url]}
    async with httpx.AsyncClient(timeout=10) as http:
        for bearer, expected in ((None, 401), (tenant, 403)):
            headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
            refused = await http.post(tl_url(cluster, 3, ttid, "/pull"), json=body,
                                      headers=headers)
            assert refused.status_code == expected, refused.text
            snap = await http.get(tl_url(cluster, 1, ttid, "/snapshot"), headers=headers)
            assert snap.status_code == expected, snap.text
    # The operator's token starts the pull; node 3 authenticates to its donors with its
    # own peer token (--token-file).
    ids = ["--tenant-id", str(ttid.tenant_id), "--timeline-id", str(ttid.timeline_id)]
    (tmp_path / "admin.jwt").write_text(admin + "\n")
    pulled = await run_cli("timeline", "pull", "--node", cluster[3].http_url, *ids,
                           "--from", ",".join(body["from"]), "--token-file",
                           str(tmp_path / "admin.jwt"), "--no-progress")
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["state"] == "done", pulled.stdout


async def test_the_donor_removes_no_wal_under_a_running_pull(
    make_cluster: ClusterFactory, tmp_path: Path,
) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    # The keep size makes every snapshot at least 4 MiB (a slow pull of it streams for
    # seconds) and makes the nodes remove as the WAL grows, archived or not.
    cluster = make_cluster(3, extra_args=["--archive", f"file://{archive}",
                                          "--wal-keep-size", "4MiB"])
    await cluster.start()
    ttid = make_ttid(159)
    await cluster.create_timeline(ttid, ids=[1, 2])
    # One proposer writes steadily (one term: the snapshot is never overtaken); the
    # archive takes each committed segment and the nodes remove it, but node 1, the donor
    # of a slow pull, keeps every byte the snapshot still has to send.
    propose = await cluster.start_propose(
        "propose159", *propose_args(cluster, ttid, "16MiB", "--rate", "1MiB", ids=[1, 2]))
    try:
        await pull_while_writing(cluster, ttid)
    finally:
        propose.kill()


async def pull_while_writing(cluster: Cluster, ttid: TenantTimelineId) -> None:
    await wait_until(lambda: _flushed_past(cluster, ttid, DEFAULT_START_LSN + 5 * MiB),
                     30, message="the propose to write 5 MiB")
    answer = await start_pull(cluster, 3, ttid, [1], max_rate=256 * 1024)
    assert answer.status_code == 202, answer.text
    first = await wait_streaming(cluster, 3, ttid)
    start = Lsn.parse(str(first["start_lsn"]))

    async def horizon(node: int) -> Lsn:
        lc = (await cluster.timeline_status(node, ttid)).wal_lifecycle
        assert lc is not None
        return Lsn.parse(str(lc["removal_horizon"]))

    async def node2_removed_past_the_snapshot() -> bool:
        state = (await pull_status(cluster, 3, ttid))["state"]
        assert state == "streaming", f"the pull ended before node 2 removed: {state}"
        return await horizon(2) >= start + 2 * SEG_SIZE

    await wait_until(node2_removed_past_the_snapshot, 30,
                     message="node 2 to archive and remove WAL the snapshot holds")
    assert await horizon(1) <= start  # the donor removed nothing the snapshot still sends
    done = await wait_pull(cluster, 3, ttid, "done", "failed", timeout=90)
    # In one attempt from where it began: every byte from `start` was served (B4: no gap;
    # WAL removed under the snapshot would have ended it with an abort).
    assert (done["state"], done["start_lsn"], done["attempts"]) == ("done", str(start), 1), done

    # The hold ends with the snapshot: node 1 removes what the archive holds.
    async def donor_removed() -> bool:
        return await horizon(1) >= start + 2 * SEG_SIZE

    await wait_until(donor_removed, 30, message="node 1 to remove WAL once the pull is done")


async def test_a_snapshot_pays_the_donors_serve_rate_like_a_recovery_stream(
    make_cluster: ClusterFactory,
) -> None:
    # The donors' serve limit covers pulls as it covers recovery streams (issue 17: a node
    # cannot be drained past its limit by pulling instead of recovering).
    cluster = make_cluster(3)
    await cluster.start()
    ttid = make_ttid(170)
    await cluster.create_timeline(ttid, ids=[1, 2])
    end = await written(cluster, ttid, "6MiB", [1, 2])
    rate = 2 * MiB
    for i in (1, 2):
        async with cluster[i].client() as client:
            await client.set_recovery_throttles(serve_max_rate=rate)
    started = trio.current_time()
    answer = await start_pull(cluster, 3, ttid, [1, 2])
    assert answer.status_code == 202, answer.text
    await wait_pull(cluster, 3, ttid, "done")
    took = trio.current_time() - started
    served = exempt = 0
    for i in (1, 2):
        async with cluster[i].client() as client:
            serve = (await client.recovery_throttles())["serve"]
        assert isinstance(serve, dict), serve
        served += int(str(serve["bytes"]))
        exempt += int(str(serve["exempt_bytes"]))
    wal = int(end) - int(DEFAULT_START_LSN)
    # Both donors alive and caught up: nothing is at risk, every frame paid.
    assert exempt == 0, exempt
    assert served >= wal, (served, wal)
    # At 2 MiB/s (the bucket's burst is a twentieth of a second's worth) 6 MiB take about
    # 3 s; the bound leaves a margin. Unthrottled, a pull of 6 MiB takes a fraction of a
    # second here.
    assert took >= (wal - rate) / rate * 0.9, took
    st = await cluster.timeline_status(3, ttid)
    assert st.flush_lsn == end, st.raw
    await assert_digests_equal(cluster, ttid, [1, 3], DEFAULT_START_LSN, end)
