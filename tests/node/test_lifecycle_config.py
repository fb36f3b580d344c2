"""The WAL lifecycle settings of a node: archive URL, endpoint, keep size, start-up words."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from safekeeper_recovery.node import (
    ConfigError,
    check_archive,
    lifecycle_config,
    lifecycle_service,
    load_config,
)
from safekeeper_recovery.storage import FileArchive
from safekeeper_recovery.transport import NodeMetrics

REQUIRED = {
    "node_id": "1",
    "data_dir": "/tmp/sk1",
    "listen_http": "127.0.0.1:7676",
    "listen_wal": "127.0.0.1:5454",
}


def test_archive_settings_come_from_every_source(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text('archive = "s3://wal/prod"\nwal_keep_size = "1GiB"\n')
    config = load_config(REQUIRED, env={"SAFEKEEPER_ARCHIVE_ENDPOINT": "http://127.0.0.1:8333"},
                         config_file=toml)
    assert (config.archive, config.archive_endpoint, config.wal_keep_size) == (
        "s3://wal/prod", "http://127.0.0.1:8333", 1 << 30)
    assert load_config({**REQUIRED, "wal_keep_size": 4096}, env={}).wal_keep_size == 4096


@pytest.mark.parametrize(("cli", "message"), [
    ({"archive": "/srv/wal"}, "unsupported archive URL"),
    ({"archive": "file:///srv/wal", "archive_endpoint": "http://127.0.0.1:1"},
     "archive_endpoint is set but archive is not an s3:// URL"),
    ({"wal_keep_size": "lots"}, "expected a size like 64MiB"),
])
def test_bad_archive_settings_are_refused_naming_the_key(cli: dict[str, str], message: str,
                                                        ) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({**REQUIRED, **cli}, env={})


async def test_a_node_that_never_removes_wal_says_so_at_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = load_config(REQUIRED, env={})
    settings = lifecycle_config(config)
    lifecycle_service(config, settings, NodeMetrics(), {})
    with caplog.at_level(logging.WARNING):
        await check_archive(settings)
    assert "never removes WAL" in caplog.text
    caplog.clear()
    kept = load_config({**REQUIRED, "wal_keep_size": "1GiB"}, env={})
    with caplog.at_level(logging.WARNING):
        await check_archive(lifecycle_config(kept))
    assert "never removes WAL" not in caplog.text


async def test_an_archive_that_does_not_work_is_a_warning_not_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    config = load_config({**REQUIRED, "archive": f"file://{tmp_path}/absent"}, env={})
    settings = lifecycle_config(config)
    assert isinstance(settings.archive, FileArchive)
    with caplog.at_level(logging.WARNING):
        await check_archive(settings)
    assert f"archive directory {tmp_path}/absent" in caplog.text
    assert "does not exist" in caplog.text
