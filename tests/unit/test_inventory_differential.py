"""deployer's inventory loader against the real `ansible-inventory --list` on varied inventories.

For every inventory under tests/unit/inventories/ in CASES: the same host set, the same groups per
host (direct or through children, without all/ungrouped), the same merged vars with the same
types, and a warning from deployer wherever ansible-inventory warns. For every one in REFUSED:
both refuse it, deployer with exit code 2 and file:line.

ansible-inventory runs with ansible-core's defaults except that a source no plugin can read
fails the run (INVENTORY_UNPARSED_IS_FAILED; its default only warns and lists nothing). Inside a
directory a file no plugin reads is skipped with a warning, Ansible's default, which deployer follows.
Behaviour is that of ansible-core 2.19 where it differs from 2.18 (2.19 ships with `pip install
ansible-core` and is the one installed for these tests).
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

from deployer.errors import InventoryError
from deployer.inventory import load
from deployer.inventory.values import jsonable

HERE = Path(__file__).parent / "inventories"
# The reference: ansible-core 2.19 (Python >= 3.11), so scripts/pythons points the other Pythons'
# runs at the main venv's with DEPLOYER_ANSIBLE_INVENTORY.
ANSIBLE_INVENTORY = os.environ.get("DEPLOYER_ANSIBLE_INVENTORY") or shutil.which(
    "ansible-inventory", path=str(Path(sys.executable).parent)) or shutil.which("ansible-inventory")

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
    # Ansible's documentation examples, as written there
    "docs_examples/intro.ini",  # "How to build your inventory": groups, ranges, host and group vars, children
    "docs_examples/intro.yml",  # the same guide's YAML, a host in several groups
    "docs_examples/plugin_doc.yml",  # the yaml plugin's own example: `hosts: test5` without a colon
    "docs_examples/production",  # "Sample setup": extension-less INI, group_vars file without extension
    # every INI value syntax: literals, quotes, escapes, IPv6, ports, '-' in a group name; a bytes
    # literal (b'raw') is unsafe text in ansible-core 2.19 (plain text in 2.18): 2.19 is followed
    "ini_values/hosts.ini",
    "yaml_tags/hosts.yml",  # !unsafe, !vault, !!str/!!float/!!set/!!omap, timestamps, YAML 1.1 scalars, merges
    "mixed_dir",  # YAML + INI + JSON + extension-less files, a plugin config and a README skipped, vars dirs
    # Empty inventories: no host, exit 0
    "empty/empty.yml",
    "empty/comments.yml",
    "empty/all_only.yml",
    "empty/all_empty_sections.yml",
    "empty/braces.yml",  # `{}` is no YAML inventory, so the ini plugin reads it: one host named "{}"
    "empty/comments.ini",
    "empty/empty",
    # .yml/.json files that are not YAML inventories: the ini plugin reads them
    "ini_fallback/ini_in.yml",
    "ini_fallback/bare_names.yml",
    "ini_fallback/ini_in.json",
    "templated/hosts.yml",  # templated, placeholder and out-of-range connection values: listed as written
    "duplicates/hosts.yml",  # duplicate keys: the last wins, with a warning
    "ranges_ansible/hosts.ini",  # backwards (empty), negative step, multi-letter bounds, two ranges
    "ranges_ansible/hosts.yml",
    "latin1/hosts.ini",  # Latin-1 bytes in comments
]

# Refused by ansible-inventory and by deployer (exit code 2, file:line).
REFUSED = [
    "refused/list.yml",  # a YAML list, and no INI either
    "refused/int_group.yml",  # a group named 1: Ansible wants a string
    "refused/bool_group.yml",  # `yes:` is the boolean True in YAML 1.1
    "refused/int_host.yml",
    "refused/latin1.yml",  # YAML must be UTF-8 (the ini plugin then fails on `all:`)
    "refused/bad_int.yml",
    "refused/bad_timestamp.yml",
    "refused/bad_float.yml",
    # Ansible 2.19 loads !!binary but its --list fails on it (2.18 printed it); deployer refuses it.
    "refused/binary.yml",
    "refused/python_tag.yml",
    "refused/custom_tag.yml",
    "refused/vault_map.yml",
    "refused/unhashable.yml",
    "refused/undefined_alias.yml",
    "refused/recursive_alias.yml",  # a value that contains itself
    "refused/two_docs.yml",
    "refused/plugin.yml",  # a plugin configuration given alone
    "refused/dash_only.yml",  # `---` alone: empty YAML, and '---' is no INI host
    "refused/hosts_list.yml",
    "refused/host_vars_list.yml",
    "refused/backwards_letters.ini",
    "refused/multi_letter.ini",  # [aa:ac]: "aa" is no run of a-zA-Z, and no number
    "refused/zero_step.ini",
    "refused/unclosed.ini",
    "refused/bad_priority.yml",
    "refused/undefined_child.ini",
    "refused/vars_undefined.ini",
    "refused/unknown_section.ini",
    "refused/colon_end.ini",
    "refused/bad_quote.ini",
]

pytestmark = pytest.mark.skipif(ANSIBLE_INVENTORY is None, reason="ansible-inventory (ansible-core) is not installed")


def ansible_run(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "ANSIBLE_HOME": str(tmp_path / ".ansible"),
        "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    }
    return subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", str(path), "--list"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )


def ansible_list(path: Path, tmp_path: Path) -> tuple[dict[str, Any], str]:
    """The --list output and the warnings printed."""
    proc = ansible_run(path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


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


def typed(value: Any) -> Any:
    """Values with their JSON types made explicit, so that 1, 1.0 and True never compare equal."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def as_listed(value: Any) -> Any:
    """deployer's value as `inventory list --json` prints it (the same encoding as ansible-inventory)."""
    return json.loads(json.dumps(jsonable(value)))


@pytest.mark.parametrize("case", CASES)
def test_matches_ansible_inventory(case: str, tmp_path: Path) -> None:
    path = HERE / case
    listing, ansible_warnings = ansible_list(path, tmp_path)
    expected_groups = ansible_groups(listing)
    expected_vars = listing["_meta"]["hostvars"]

    inventory = load(str(path))

    assert set(inventory.hosts) == set(expected_groups)
    for name, host in inventory.hosts.items():
        assert set(host.groups) == expected_groups[name], name
        assert list(host.groups) == sorted(host.groups)
        assert typed(as_listed(dict(host.vars))) == typed(expected_vars.get(name, {})), name
    if "[WARNING]" in ansible_warnings:
        # Ansible's warnings are warnings in deployer too (duplicate keys, skipped files, names).
        assert inventory.warnings, ansible_warnings


@pytest.mark.parametrize("case", REFUSED)
def test_refused_like_ansible_inventory(case: str, tmp_path: Path) -> None:
    path = HERE / case
    proc = ansible_run(path, tmp_path)
    assert proc.returncode != 0, proc.stdout
    with pytest.raises(InventoryError) as err:
        load(str(path))
    assert err.value.exit_code == 2
    assert err.value.file == str(path) and err.value.line, str(err.value)
    assert str(err.value).startswith(f"{path}:{err.value.line}: ")


def test_cases_are_varied() -> None:
    # The differential test only means something if the fixtures exercise every feature.
    texts = "".join(p.read_bytes().decode("utf-8", "replace") for p in HERE.rglob("*") if p.is_file())
    for feature in ("children:", ":children]", ":vars]", "[01:04]", "[1:9:2]", "[a:c]", "ansible_group_priority",
                    "!unsafe", "!vault", "<<: *", "plugin:", "{{ ssh_port }}"):
        assert feature in texts, feature
    assert (HERE / "vars_dirs/group_vars/gpus").is_dir() and (HERE / "vars_dirs/host_vars/gpu02").is_dir()
    assert (HERE / "mixed_dir/group_vars/gpus").is_dir() and (HERE / "mixed_dir/host_vars/gpu01").is_file()
    assert len(CASES) >= 30 and len(REFUSED) >= 20
    listed = {c.split("/")[0] for c in CASES + REFUSED}
    on_disk = {p.name for p in HERE.iterdir() if p.is_dir()} - {"patterns"}  # patterns: test_patterns.py's
    assert on_disk <= listed, on_disk - listed
