"""Every command answers ``--help`` with exit 0; ``keygen``/``token`` make working keys."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from safekeeper_recovery.cli import main
from safekeeper_recovery.testing import allocate_ports, run_cli


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under ``group`` (the root included), found from the registry."""
    found = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += all_commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


COMMANDS = all_commands(main)
EXPECTED = {"serve", "keygen", "token", "timeline", "propose"}


def test_every_expected_command_is_registered() -> None:
    assert {c[0] for c in COMMANDS if c} >= EXPECTED
    assert ("timeline", "create") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help_exits_zero(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"], prog_name="safekeeper-recovery")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


async def test_python_dash_m_serve_help_exits_zero() -> None:
    result = await run_cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    assert "--ready-file" in result.stdout


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
        "serve", "--node-id", "1", "--data-dir", str(tmp_path), "--listen-http", "127.0.0.1:0",
        "--listen-wal", "127.0.0.1:0", "--heartbeat-timeout", "soon",
    )
    assert result.returncode == 2
    assert "Invalid value for '--heartbeat-timeout'" in result.stderr
    assert "expected a duration like 5s" in result.stderr


def test_serve_old_option_names_still_work_with_a_deprecation_note(tmp_path: Path) -> None:
    # --id and --auth-token reach the configuration (the error lists only what is missing).
    result = CliRunner().invoke(main, ["serve", "--id", "1", "--auth-token", "peer.jwt",
                                       "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "Warning: --id is deprecated, use --node-id" in result.output
    assert "Warning: --auth-token is deprecated, use --token-file" in result.output
    assert "missing required settings: --listen-http, --listen-wal" in result.output


def test_serve_refuses_an_option_under_both_names() -> None:
    result = CliRunner().invoke(main, ["serve", "--id", "1", "--node-id", "2"])
    assert result.exit_code == 2
    assert "--id is the old name of --node-id: give only --node-id" in result.output


async def test_a_taken_port_is_named_before_the_other_port_opens(tmp_path: Path) -> None:
    [wal_port] = allocate_ports(1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run_cli(
            "serve", "--node-id", "1", "--data-dir", str(tmp_path),
            "--listen-http", f"127.0.0.1:{port}", "--listen-wal", f"127.0.0.1:{wal_port}",
            "--log-format", "json",
        )
    assert result.returncode == 1, result.stderr
    assert (f"Error: cannot listen on 127.0.0.1:{port} (--listen-http): Address already in "
            "use: another process is listening there") in result.stderr
    assert "WAL port listening" not in result.stderr  # nothing was opened first


async def test_a_data_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "sk1").write_text("not a directory")
    result = await run_cli(
        "serve", "--node-id", "1", "--data-dir", str(tmp_path / "sk1"),
        "--listen-http", "127.0.0.1:0", "--listen-wal", "127.0.0.1:0", "--log-format", "json",
    )
    assert result.returncode == 1, result.stderr
    assert (f"Error: data dir {tmp_path / 'sk1'} is not a directory (--data-dir)"
            in result.stderr)


def test_one_address_for_both_ports_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "serve", "--node-id", "1", "--data-dir", str(tmp_path),
        "--listen-http", "127.0.0.1:7000", "--listen-wal", "127.0.0.1:7000"])
    assert result.exit_code == 2
    assert "listen_http and listen_wal are both 127.0.0.1:7000" in result.output


async def test_serve_exits_one_on_an_empty_peer_token_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jwt").write_text("")
    result = await run_cli(
        "serve", "--node-id", "1", "--data-dir", str(tmp_path), "--listen-http", "127.0.0.1:0",
        "--listen-wal", "127.0.0.1:0", "--token-file", str(tmp_path / "empty.jwt"),
    )
    assert result.returncode == 1, result.stderr
    assert "empty" in result.stderr
