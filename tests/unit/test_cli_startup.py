"""`deploy --help` and `deploy inventory list` answer at once: they never import the docker SDK,
SSH, compression or rich; commands load lazily from a table that matches their own help. (A module
deferred by deployer.lazy is a stand-in until first used: it does not count as loaded.)"""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from deployer.cli.app import COMMANDS, cli

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "tests" / "unit" / "inventories" / "ranges"
# What only shipping, running or checking hosts needs; none is needed to list commands or hosts.
HEAVY = ("docker", "paramiko", "fabric", "invoke", "zstandard", "requests", "rich", "jinja2", "ruamel",
         "tenacity", "cryptography")

PROBE = f"""
import json, sys
from deployer.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
loaded = [m for m, mod in sys.modules.items() if type(mod).__name__ != "_Deferred"]  # stand-ins: deployer.lazy
print(json.dumps([code, sorted(m for m in loaded if m.split(".")[0] in {HEAVY!r})]), file=sys.stderr)
"""


def _imports(*args: str) -> tuple[int, list[str], str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False, env={"PATH": "/usr/bin:/bin", "DEPLOY_INVENTORY": str(INVENTORY)})
    code, modules = json.loads(proc.stderr.strip().splitlines()[-1])
    return code, modules, proc.stdout


@pytest.mark.parametrize("args", [["--help"], ["inventory", "--help"], ["inventory", "list"],
                                  ["inventory", "list", "--json"], ["--version"]])
def test_listing_commands_and_hosts_loads_nothing_heavy(args: list[str]) -> None:
    code, modules, out = _imports(*args)
    assert code == 0 and out
    assert modules == []


def test_a_command_that_ships_still_loads_what_it_needs() -> None:
    code, modules, out = _imports("ship", "--help")
    assert code == 0 and "--dry-run" in out and "docker" in modules


def test_a_ship_without_a_playbook_loads_neither_jinja2_nor_invoke() -> None:
    # invoke is paramiko's for ssh_config `Match exec` only: a stand-in until then (deployer.lazy)
    code, modules, _ = _imports("ship", "--help")
    assert code == 0 and "paramiko" in modules
    assert not [m for m in modules if m.startswith("jinja2")]
    assert not [m for m in modules if m.startswith("invoke")]


def test_a_deferred_module_loads_on_first_use() -> None:
    probe = ("import sys; from deployer import lazy; lazy.defer('invoke'); import paramiko.config as pc; "
             "before = sorted(m for m in sys.modules if m.startswith('invoke')); run = pc.invoke.run; "
             "import invoke; print(before, 'invoke.context' in sys.modules, invoke.run is run, callable(run))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert out.split() == ["['invoke']", "True", "True", "True"]


def _first_paragraph(cmd: click.Command) -> str:
    return " ".join((cmd.help or "").split("\n\n")[0].split())


def _all_loaded(group: click.Group, lazy: dict[str, tuple[str, str]]) -> None:
    for module, _ in lazy.values():
        importlib.import_module(module)
    assert set(group.commands) == set(lazy) | {n for n in group.commands if n not in lazy}
    for name, (module, short) in lazy.items():
        cmd = group.commands[name]
        assert cmd.callback is not None and cmd.callback.__module__ == module, name
        assert _first_paragraph(cmd) == short, f"app.COMMANDS[{name!r}] differs from the command's help"


def test_the_lazy_tables_match_the_commands() -> None:
    _all_loaded(cli, COMMANDS)
    assert set(cli.commands) == set(COMMANDS)  # every command is in the table
    inventory = cli.commands["inventory"]
    assert isinstance(inventory, click.Group)
    _all_loaded(inventory, inventory.lazy)  # type: ignore[attr-defined]


@pytest.mark.parametrize("group", [[], ["inventory"]])
def test_help_is_the_same_lazy_or_loaded(group: list[str]) -> None:
    def help_text(preload: str) -> str:
        code = f"{preload}from deployer.cli import main; main({[*group, '--help']!r})"
        return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                              timeout=60, check=True).stdout

    modules = sorted({m for m, _ in COMMANDS.values()} | {"deployer.cli.check"})
    lazy = help_text("")
    assert "Commands:" in lazy and lazy == help_text("".join(f"import {m}; " for m in modules))
