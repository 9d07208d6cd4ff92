"""-i/--inventory and --verbose after the command's name, as before it: `deploy ship -i prod.yml`
is how ansible-playbook's users type it. `-v` after the command stays `run`'s volume."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import pytest

from deployer.cli import _verbose, main
from deployer.cli.app import COMMANDS, cli

REPO = Path(__file__).resolve().parents[2]
RANGES = REPO / "tests" / "unit" / "inventories" / "ranges"
PATTERNS = REPO / "tests" / "unit" / "inventories" / "patterns" / "hosts.yml"


def _names(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert main(list(args)) == 0
    return [h["name"] for h in json.loads(capsys.readouterr().out)]


def test_inventory_after_the_command_is_the_inventory(capsys: pytest.CaptureFixture[str]) -> None:
    before = _names(capsys, "-i", str(PATTERNS), "inventory", "list", "--json")
    after = _names(capsys, "inventory", "list", "--json", "-i", str(PATTERNS))
    assert after == before and "gpu01" in after
    assert _names(capsys, "inventory", "list", "--json", "--inventory", str(RANGES)) != before


def test_inventory_after_the_command_wins_over_the_one_before(capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_INVENTORY", str(RANGES))
    ranges = _names(capsys, "inventory", "list", "--json")
    assert _names(capsys, "-i", str(RANGES), "inventory", "list", "--json", "-i", str(PATTERNS)) != ranges
    assert _names(capsys, "inventory", "list", "--json", "-i", str(PATTERNS)) == _names(
        capsys, "-i", str(PATTERNS), "inventory", "list", "--json")


def test_a_missing_inventory_given_after_the_command_is_bad_input(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inventory", "list", "-i", str(tmp_path / "nope.yml")]) == 2
    assert "nope.yml" in capsys.readouterr().err


def test_every_command_takes_them(capsys: pytest.CaptureFixture[str]) -> None:
    """Each command's --help lists them, so none was left out (subcommands of groups too)."""
    def commands(group: click.Group, ctx: click.Context) -> list[click.Command]:
        found = []
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            assert cmd is not None
            found += commands(cmd, ctx) if isinstance(cmd, click.Group) else [cmd]
        return found

    every = commands(cli, click.Context(cli))
    assert len(every) > len(COMMANDS)  # inventory's and playbook's own commands are in
    for cmd in every:
        opts = {o for p in cmd.params for o in p.opts}
        assert {"-i", "--inventory", "--verbose"} <= opts, cmd.name
        assert "-v" not in opts or cmd.name == "run"  # run's -v is a volume, as docker run's


def test_verbose_after_the_command_logs_debug(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        for h in list(root.handlers):
            root.removeHandler(h)
        assert main(["inventory", "list", "--json", "-i", str(PATTERNS), "--verbose"]) == 0
        assert root.level == logging.DEBUG and root.handlers
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)


@pytest.mark.parametrize(("args", "verbose"), [
    (["-v", "ship"], True),
    (["--verbose", "ship"], True),
    (["-i", "-v", "ship"], False),  # an inventory named -v
    (["ship", "--verbose"], True),
    (["ship", "--host", "gpu01", "--verbose", "--json"], True),
    (["run", "-v", "/data:/data", "--host", "gpu01"], False),  # a volume
    (["run", "--host", "gpu01", "--image", "x", "--", "python", "train.py", "--verbose"], False),  # the container's
    (["ship", "-i", "prod.yml"], False),
    ([], False),
])
def test_tracebacks_are_shown_for_verbose_wherever_it_is_given(args: list[str], verbose: bool) -> None:
    assert _verbose(args) is verbose


def test_v_after_a_command_without_volumes_says_what_to_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inventory", "list", "-i", str(PATTERNS), "-v"]) == 2
    err = capsys.readouterr().err
    assert "No such option '-v'. For debug logs: --verbose here, or -v before the command" in err, err
