"""Every command answers ``--help`` with exit 0; ``keygen``/``token`` make working keys."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from .harness import run_cli

COMMANDS = [
    (),
    ("serve",),
    ("keygen",),
    ("token",),
    ("timeline",),
    ("timeline", "create"),
    ("timeline", "status"),
    ("timeline", "delete"),
    ("propose",),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
async def test_help_exits_zero(command: tuple[str, ...]) -> None:
    result = await run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


async def test_keygen_writes_a_private_key_only_the_owner_can_read(tmp_path: Path) -> None:
    result = await run_cli("keygen", "--out-dir", str(tmp_path / "keys"))
    assert result.returncode == 0, result.stderr
    private = tmp_path / "keys" / "auth_private_key.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (tmp_path / "keys" / "auth_public_key.pem").read_text().startswith("-----BEGIN")
    again = await run_cli("keygen", "--out-dir", str(tmp_path / "keys"))
    assert again.returncode != 0
    assert "already exist" in again.stderr


async def test_tenant_token_needs_a_tenant_id(tmp_path: Path) -> None:
    await run_cli("keygen", "--out-dir", str(tmp_path))
    key = str(tmp_path / "auth_private_key.pem")
    refused = await run_cli("token", "--private-key", key, "--scope", "tenant")
    assert refused.returncode == 2
    assert "--tenant-id" in refused.stderr
    ok = await run_cli("token", "--private-key", key, "--scope", "safekeeperdata")
    assert ok.returncode == 0
    assert ok.stdout.count(".") == 2  # a JWT


async def test_serve_refuses_bad_configuration_with_a_clear_message(tmp_path: Path) -> None:
    result = await run_cli(
        "serve", "--id", "1", "--data-dir", str(tmp_path), "--listen-http", "127.0.0.1:0",
        "--listen-wal", "127.0.0.1:0", "--heartbeat-timeout", "soon",
    )
    assert result.returncode == 2
    assert "heartbeat_timeout" in result.stderr
    assert "duration" in result.stderr
