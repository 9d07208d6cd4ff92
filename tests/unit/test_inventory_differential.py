"""deployer's inventory loader against the real `ansible-inventory --list` on varied inventories.

For every inventory under tests/unit/inventories/: the same host set, the same groups per
host (direct or through children, without all/ungrouped) and the same merged vars.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deployer.inventory import load

HERE = Path(__file__).parent / "inventories"
ANSIBLE_INVENTORY = shutil.which("ansible-inventory", path=str(Path(sys.executable).parent)) or shutil.which(
    "ansible-inventory"
)

CASES = [
    "nested/hosts.yml",  # three levels of children, a host in several groups, YAML anchors/merge keys
    "ranges/hosts.yml",  # zero-padded, strides, letters (across case), two ranges in a name, ports, IPv4
    "ini_sections/hosts.ini",  # :vars, :children declared before their groups, typed values, host:port
    "vars_dirs/hosts.yml",  # group_vars/ and host_vars/ files, .json, directories of files, nested dirs
    "inv_dir",  # a directory of YAML + extension-less INI + subdirectory, ignored files, group_vars inside
    "priority/hosts.yml",  # same-depth name order, ansible_group_priority, deeper through a longer path
    "ini_noext/hosts",  # INI without extension, ranges with letters, Python-literal typing
    "jumps/hosts.yml",  # ssh args with ProxyJump / -J / ProxyCommand vars
    "../../../inventories/example.yml",  # the shipped example: ranges, nested sites, functional groups
]

pytestmark = pytest.mark.skipif(ANSIBLE_INVENTORY is None, reason="ansible-inventory (ansible-core) is not installed")


def ansible_list(path: Path, tmp_path: Path) -> dict[str, Any]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "ANSIBLE_HOME": str(tmp_path / ".ansible"),
        "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    }
    proc = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", str(path), "--list"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def ansible_groups(listing: dict[str, Any]) -> dict[str, set[str]]:
    """host -> every group containing it directly or through children (all/ungrouped excluded)."""
    out: dict[str, set[str]] = {}

    def hosts_of(group: str, seen: frozenset[str] = frozenset()) -> set[str]:
        entry = listing.get(group, {})
        found = set(entry.get("hosts", []))
        for child in entry.get("children", []):
            if child not in seen:
                found |= hosts_of(child, seen | {group})
        return found

    for group in listing:
        if group == "_meta":
            continue
        for host in hosts_of(group):
            out.setdefault(host, set())
            if group not in ("all", "ungrouped"):
                out[host].add(group)
    return out


def normalized(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


@pytest.mark.parametrize("case", CASES)
def test_matches_ansible_inventory(case: str, tmp_path: Path) -> None:
    path = HERE / case
    listing = ansible_list(path, tmp_path)
    expected_groups = ansible_groups(listing)
    expected_vars = listing["_meta"]["hostvars"]

    inventory = load(str(path))

    assert set(inventory.hosts) == set(expected_groups)
    for name, host in inventory.hosts.items():
        assert set(host.groups) == expected_groups[name], name
        assert list(host.groups) == sorted(host.groups)
        assert normalized(dict(host.vars)) == expected_vars.get(name, {}), name


def test_cases_are_varied() -> None:
    # The differential test only means something if the fixtures exercise every feature.
    texts = "".join(p.read_text() for p in HERE.rglob("*") if p.is_file())
    for feature in ("children:", ":children]", ":vars]", "[01:04]", "[1:9:2]", "[a:c]", "ansible_group_priority"):
        assert feature in texts, feature
    assert (HERE / "vars_dirs/group_vars/gpus").is_dir() and (HERE / "vars_dirs/host_vars/gpu02").is_dir()
    assert len(CASES) >= 6
