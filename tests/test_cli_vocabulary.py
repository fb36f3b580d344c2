"""One vocabulary: every command's options follow the table in ``cli/_options.py``.

The test walks every click command (groups included) and checks each option: a concept
has one name and one type everywhere, every visible option has help, defaults and
``[required]`` are shown by click (never written into the help by hand), old spellings
are hidden, and ``serve``'s options are exactly the config keys and ``SAFEKEEPER_*``
variables.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import attrs
import click
import pytest

from safekeeper_recovery.cli import main
from safekeeper_recovery.cli._options import (
    DurationType,
    Hex32Type,
    HttpUrlType,
    LsnType,
    NodeIdType,
    SizeType,
    UrlListType,
)
from safekeeper_recovery.node import ENV_PREFIX, NodeConfig

VOCABULARY: dict[str, type[click.ParamType[object]] | tuple[type[object], ...]] = {
    "--node-id": NodeIdType,
    "--node": (HttpUrlType, UrlListType),
    "--safekeepers": UrlListType,
    "--create-timeline-on": UrlListType,
    "--tenant-id": Hex32Type,
    "--timeline-id": Hex32Type,
    "--token-file": click.Path,
    "--start-lsn": LsnType,
    "--stop-at-lsn": LsnType,
    "--bytes": SizeType,
    "--wal-seg-size": SizeType,
    "--rate": SizeType,
    "--timeout": DurationType,
    "--log-format": click.Choice,
    "--log-level": click.Choice,
    "--data-dir": click.Path,
}
"""Option name -> the type it has in every command that takes it."""

DURATION_NAMES = re.compile(r"--.*-(timeout|interval)|--long-poll")
FREE_TEXT = {"--from-postgres", "--slot", "--listen-http", "--listen-wal", "--listen-pg",
             "--advertise-http", "--advertise-wal", "--peer"}
"""Options whose value is free text (a libpq string, a slot name) or checked by the node
configuration with its own message (addresses, peers)."""
OLD_SPELLINGS = {"--id", "--auth-token", "--token", "--poll-interval"}
NOT_SETTINGS = {"--config", "--ready-file", "--help"}


def walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, (*path, name))


OPTIONS = [
    (path, command, option)
    for path, command in walk(main)
    for option in command.params
    if isinstance(option, click.Option) and option.name != "help"
]


Item = tuple[tuple[str, ...], click.Command, click.Option]


def option_id(item: Item) -> str:
    path, _, option = item
    return " ".join(path) + " " + option.opts[0]


@pytest.mark.parametrize("item", OPTIONS, ids=[option_id(i) for i in OPTIONS])
def test_option_follows_the_vocabulary(item: Item) -> None:
    path, command, option = item
    name = option.opts[0]
    where = f"{' '.join(path)} {name}"
    if option.hidden:
        assert name in OLD_SPELLINGS, f"{where}: hidden, but not a known old spelling"
        return
    assert name not in OLD_SPELLINGS, f"{where}: an old spelling must be a hidden alias"
    assert option.help, f"{where} has no help"
    assert not re.search(r"\[[^\]]*\]\s*$", option.help), (
        f"{where}: defaults and [required] are shown by click, not written into the help"
    )
    expected = VOCABULARY.get(name)
    if expected is not None:
        assert isinstance(option.type, expected), f"{where}: {option.type!r}, not {expected}"
    if DURATION_NAMES.fullmatch(name):
        assert isinstance(option.type, DurationType), f"{where} is a time span: DURATION"
    default = option.get_default(click.Context(command), call=False)
    if not option.is_flag and not option.multiple and default is not None and (
            default is not getattr(click.core, "UNSET", None)):  # click >= 8.3: no default
        assert option.show_default, f"{where}: its default is not shown"
    if isinstance(option.type, click.types.StringParamType):
        assert name in FREE_TEXT, f"{where} is TEXT: give it a type (or a Choice)"


def test_an_old_spelling_exists_only_next_to_its_new_one() -> None:
    for path, command in walk(main):
        names = {o.opts[0] for o in command.params if isinstance(o, click.Option)}
        renamed = {"--id": "--node-id", "--auth-token": "--token-file",
                   "--token": "--token-file", "--poll-interval": "--min-interval"}
        for old, new in renamed.items():
            if old in names:
                assert new in names, f"{' '.join(path)}: {old} without {new}"


def test_serve_options_are_the_config_keys_and_env_variables() -> None:
    serve = main.commands["serve"]
    ctx = click.Context(serve)
    keys = {f.name for f in attrs.fields(NodeConfig)}
    seen = set()
    for option in serve.params:
        if not isinstance(option, click.Option) or option.hidden:
            continue
        if option.opts[0] in NOT_SETTINGS:
            continue
        assert option.name in keys, f"serve {option.opts[0]} is not a config key"
        seen.add(option.name)
        record = option.get_help_record(ctx)
        assert record is not None
        assert f"env var: {ENV_PREFIX}{option.name.upper()}" in record[1]
        if option.name != "peers":  # --peer repeats; the key holds the list
            assert option.opts[0] == "--" + option.name.replace("_", "-")
    assert seen == keys, f"config keys without an option: {keys - seen}"


def test_required_options_are_marked_the_same_way_everywhere() -> None:
    for path, command in walk(main):
        ctx = click.Context(command)
        for option in command.params:
            if not isinstance(option, click.Option) or option.hidden:
                continue
            record = option.get_help_record(ctx)
            assert record is not None
            required = option.required or getattr(option, "setting_required", False)
            assert ("required]" in record[1]) == required, (
                f"{' '.join(path)} {option.opts[0]}: {record[1]!r}"
            )
