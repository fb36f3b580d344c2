"""Node configuration: precedence (CLI > env > TOML > defaults), value forms, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from safekeeper_recovery.core import DiskLimit, NodeId
from safekeeper_recovery.node import ConfigError, load_config, parse_duration, parse_host_port

REQUIRED = {
    "node_id": "1",
    "data_dir": "/tmp/sk1",
    "listen_http": "127.0.0.1:7676",
    "listen_wal": "127.0.0.1:5454",
}


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_defaults_fill_everything_not_given() -> None:
    config = load_config(REQUIRED, env={})
    assert config.node_id == NodeId(1)
    assert config.data_dir == Path("/tmp/sk1")
    assert config.listen_http == ("127.0.0.1", 7676)
    assert config.advertise_http is None
    assert config.recovery is True
    assert config.heartbeat_timeout == 5.0
    assert config.peer_push_interval == 1.0
    assert config.http_timeout == 10.0
    assert config.connect_timeout == 10.0
    assert config.no_data_timeout == 30.0
    assert config.max_concurrent_recoveries == 8
    assert config.wal_direct_io is True
    assert config.log_format == "auto"
    assert dict(config.peers) == {}


def test_cli_beats_env_beats_toml_beats_defaults(tmp_path: Path) -> None:
    toml = write_toml(
        tmp_path,
        'heartbeat_timeout = "7s"\nhttp_timeout = 3\nconnect_timeout = "2s"\n'
        'no_data_timeout = 12.5\n',
    )
    env = {"SAFEKEEPER_HEARTBEAT_TIMEOUT": "6s", "SAFEKEEPER_HTTP_TIMEOUT": "4s"}
    cli = {**REQUIRED, "heartbeat_timeout": "500ms"}
    config = load_config(cli, env=env, config_file=toml)
    assert config.heartbeat_timeout == 0.5  # CLI
    assert config.http_timeout == 4.0  # env over TOML
    assert config.connect_timeout == 2.0  # TOML over default
    assert config.no_data_timeout == 12.5
    assert config.keepalive_interval == 1.0  # default


def test_required_settings_may_come_from_env_and_toml(tmp_path: Path) -> None:
    toml = write_toml(
        tmp_path,
        'node_id = 3\ndata_dir = "/data"\nlisten_http = "0.0.0.0:0"\n'
        '[peers]\n"1" = "http://10.0.0.1:7676"\n"2" = "http://10.0.0.2:7676/"\n',
    )
    config = load_config({}, env={"SAFEKEEPER_LISTEN_WAL": "[::1]:5454"}, config_file=toml)
    assert config.node_id == 3
    assert config.listen_http == ("0.0.0.0", 0)
    assert config.listen_wal == ("::1", 5454)
    assert dict(config.peers) == {1: "http://10.0.0.1:7676", 2: "http://10.0.0.2:7676"}


def test_config_file_can_be_named_by_env(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "recovery = false\n")
    config = load_config(REQUIRED, env={"SAFEKEEPER_CONFIG": str(toml)})
    assert config.recovery is False


def test_direct_io_can_be_turned_off_from_each_source(tmp_path: Path) -> None:
    assert load_config({**REQUIRED, "wal_direct_io": False}, env={}).wal_direct_io is False
    env = {"SAFEKEEPER_WAL_DIRECT_IO": "off"}
    assert load_config(REQUIRED, env=env).wal_direct_io is False
    toml = write_toml(tmp_path, "wal_direct_io = false\n")
    assert load_config(REQUIRED, env={}, config_file=toml).wal_direct_io is False
    with pytest.raises(ConfigError, match="WAL_DIRECT_IO"):
        load_config(REQUIRED, env={"SAFEKEEPER_WAL_DIRECT_IO": "maybe"})


def test_peers_from_cli_items_and_env_list() -> None:
    cli = {**REQUIRED, "peers": ("2=http://h2:1", "3=http://h3:1")}
    assert dict(load_config(cli, env={}).peers) == {2: "http://h2:1", 3: "http://h3:1"}
    env = {"SAFEKEEPER_PEERS": "2=http://h2:1,3=https://h3:1"}
    assert dict(load_config(REQUIRED, env=env).peers) == {2: "http://h2:1", 3: "https://h3:1"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("500ms", 0.5), ("1.5", 1.5), ("2m", 120.0), ("1h", 3600.0), (" 3 s ", 3.0)],
)
def test_duration_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "-1s", "0", "abc", "1.2.3s", "inf"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["localhost", ":80", "host:", "host:99999", "host:x"])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|port"):
        parse_host_port(text)


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        ({"heartbeat_timeout": "soon"}, r"heartbeat_timeout \(--heartbeat-timeout\)"),
        ({"node_id": "-3"}, "node_id"),
        ({"listen_http": "nohost"}, "listen_http"),
        ({"peers": ("2=ftp://x",)}, "peers"),
        ({"peers": ("1=http://self:1",)}, "own id"),
        ({"peers": ("2",)}, "ID=URL"),
        ({"log_format": "xml"}, "log_format"),
        ({"max_concurrent_recoveries": "0"}, "max_concurrent_recoveries"),
    ],
)
def test_bad_cli_values_name_the_setting(cli: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({**REQUIRED, **cli}, env={})


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="SAFEKEEPER_RECOVERY"):
        load_config(REQUIRED, env={"SAFEKEEPER_RECOVERY": "maybe"})


def test_unknown_env_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'heartbeat_timout'"):
        load_config(REQUIRED, env={"SAFEKEEPER_HEARTBEAT_TIMOUT": "5s"})


def test_unrelated_env_variables_are_ignored() -> None:
    load_config(REQUIRED, env={"HOME": "/root", "SAFEKEEPERX": "1"})


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "listen_htp = '1.2.3.4:5'\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'listen_htp' \(.*node.toml"):
        load_config(REQUIRED, env={}, config_file=toml)


def test_invalid_toml_and_missing_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(REQUIRED, env={}, config_file=write_toml(tmp_path, "x = = 1"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(REQUIRED, env={}, config_file=tmp_path / "absent.toml")


def test_missing_required_settings_are_listed() -> None:
    with pytest.raises(ConfigError, match="--data-dir, --listen-wal"):
        load_config({"node_id": "1", "listen_http": "h:1"}, env={})


def test_auth_key_without_peer_token_is_refused() -> None:
    cli = {**REQUIRED, "peers": ("2=http://h:1",), "auth_public_key": "/k.pem"}
    with pytest.raises(ConfigError, match="token_file"):
        load_config(cli, env={})


def test_toml_id_is_refused_with_the_right_key_named(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "id = 1\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'id' .*did you mean 'node_id'\?"):
        load_config({}, env={}, config_file=toml)


def test_old_auth_token_key_still_sets_token_file(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "auth_token = '/peer.jwt'\n")
    assert load_config(REQUIRED, env={}, config_file=toml).token_file == Path("/peer.jwt")
    env = {"SAFEKEEPER_AUTH_TOKEN": "/env.jwt"}
    assert load_config(REQUIRED, env=env).token_file == Path("/env.jwt")
    assert load_config(REQUIRED, env={"SAFEKEEPER_TOKEN_FILE": "/t.jwt"}).token_file == Path(
        "/t.jwt")


def test_listen_pg_is_off_by_default_and_comes_from_each_source(tmp_path: Path) -> None:
    assert load_config(REQUIRED, env={}).listen_pg is None
    assert load_config({**REQUIRED, "listen_pg": "127.0.0.1:5433"}, env={}).listen_pg == (
        "127.0.0.1", 5433)
    env = {"SAFEKEEPER_LISTEN_PG": "[::1]:5433"}
    assert load_config(REQUIRED, env=env).listen_pg == ("::1", 5433)
    toml = write_toml(tmp_path, 'listen_pg = "0.0.0.0:5433"\n')
    assert load_config(REQUIRED, env={}, config_file=toml).listen_pg == ("0.0.0.0", 5433)
    with pytest.raises(ConfigError, match="needs a port of its own"):
        load_config({**REQUIRED, "listen_pg": REQUIRED["listen_wal"]}, env={})


def test_max_disk_usage_from_each_source_and_its_default(tmp_path: Path) -> None:
    assert load_config(REQUIRED, env={}).max_disk_usage == DiskLimit(percent=95)
    assert load_config({**REQUIRED, "max_disk_usage": "80%"}, env={}).max_disk_usage == (
        DiskLimit(percent=80))
    env = {"SAFEKEEPER_MAX_DISK_USAGE": "200GiB"}
    assert load_config(REQUIRED, env=env).max_disk_usage == DiskLimit(max_bytes=200 << 30)
    toml = write_toml(tmp_path, 'max_disk_usage = "off"\n')
    assert load_config(REQUIRED, env={}, config_file=toml).max_disk_usage is None
    toml = write_toml(tmp_path, "max_disk_usage = 1073741824\n")
    assert load_config(REQUIRED, env={}, config_file=toml).max_disk_usage == (
        DiskLimit(max_bytes=1 << 30))
    for bad in ("0", "120%", "lots", "-5%"):
        with pytest.raises(ConfigError, match="max_disk_usage"):
            load_config({**REQUIRED, "max_disk_usage": bad}, env={})
