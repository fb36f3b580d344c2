"""schemathesis, reading the OpenAPI document, fuzzes a live node's HTTP API: no 5xx.

Every operation gets a bounded number of generated requests, valid ones (``positive``)
and invalid ones (``negative``), against a real ``serve`` process holding a timeline with
WAL; the timeline operations are also aimed at that timeline, so they reach past the
404s. The change feed is left out of the fuzzing: its long poll may rightly take up to
300 s (tests/transport and the sidecar tests exercise it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import pytest
import schemathesis
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from safekeeper_recovery.testing import make_ttid, run_cli

from .conftest import ClusterFactory

DOC_FILE: Final = (Path(__file__).resolve().parents[2]
                   / "safekeeper_recovery/transport/openapi.json")
TTID: Final = make_ttid(1)
EXAMPLES: Final = 12
"""Per operation and mode: keeps the whole run to seconds."""
SKIPPED: Final = {"/v1/timelines/changes"}


def fuzz(base_url: str) -> list[str]:
    """Run the fuzzer (blocking); the 5xx answers it provoked, one line each."""
    schema = schemathesis.openapi.from_dict(json.loads(DOC_FILE.read_text()))
    ours = {"tenant_id": str(TTID.tenant_id), "timeline_id": str(TTID.timeline_id)}
    failures: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # an operation the loader refused
        operation = result.ok()
        if operation.path in SKIPPED:
            continue
        names = {p.name for p in operation.path_parameters}
        strategies = []
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies.append(operation.as_strategy(generation_mode=mode))
            if names and mode is GenerationMode.POSITIVE:
                strategies.append(operation.as_strategy(
                    generation_mode=mode, path_parameters={n: ours[n] for n in names}))

        @settings(max_examples=EXAMPLES * len(strategies), deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), derandomize=True)
        @given(case=st.one_of(strategies))
        def check(case: Any) -> None:
            response = case.call(base_url=base_url, timeout=10)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} "
                                f"{case.query or ''} -> {response.status_code} "
                                f"{response.text[:200]}")

        check()
    return failures


@pytest.mark.slow
async def test_api_fuzzer_finds_no_server_errors(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(1)
    await cluster.start()
    await cluster.create_timeline(TTID)
    written = await cluster.propose("--safekeepers", cluster.wal_urls, "--tenant-id",
                                    str(TTID.tenant_id), "--timeline-id",
                                    str(TTID.timeline_id), "--bytes", "256KiB",
                                    "--wal-seg-size", "1MiB", "--no-progress")
    assert written.returncode == 0, written.stderr
    failures = await trio.to_thread.run_sync(fuzz, cluster[1].http_url)
    assert failures == [], "\n".join(failures)
    assert cluster[1].running, cluster[1].stderr()
    # The node still serves (the fuzzer may have deleted the timeline: that is allowed).
    health = await run_cli("status", "--node", cluster[1].http_url, "--json")
    assert health.returncode == 0, health.stderr
