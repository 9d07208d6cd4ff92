"""Ansible host patterns: unit checks, plus the same patterns through the real `ansible --list-hosts`."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deployer.errors import InventoryError
from deployer.inventory import Inventory, load
from deployer.inventory.patterns import ordered, split

FIXTURE = Path(__file__).parent / "inventories" / "patterns" / "hosts.yml"
ANSIBLE = shutil.which("ansible", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def inv() -> Inventory:
    return load(str(FIXTURE))


def names(inv: Inventory, pattern: str) -> list[str]:
    return [h.name for h in inv.select(pattern)]


def test_split() -> None:
    assert split("a,b[1], c[2:3] , d") == ["a", "b[1]", "c[2:3]", "d"]
    assert split("gpus:!gpu03:&connected") == ["gpus", "!gpu03", "&connected"]
    assert split("gpu[01:04]") == ["gpu[01:04]"]
    assert split("web*[0:1]:cpu") == ["web*[0:1]", "cpu"]


def test_ordered_puts_plain_then_and_then_not() -> None:
    assert ordered(["!a", "&b", "c"]) == ["c", "&b", "!a"]
    assert ordered(["!a"]) == ["all", "!a"]


CASES = {
    "all": ["loose01", "gpu01", "gpu02", "gpu03", "gpu04", "cpu01", "cpu02", "web1.example.com", "web2.example.com"],
    "*": ["loose01", "gpu01", "gpu02", "gpu03", "gpu04", "cpu01", "cpu02", "web1.example.com", "web2.example.com"],
    "gpu01": ["gpu01"],
    "gpus": ["gpu01", "gpu02", "gpu03", "gpu04"],
    "h100": ["gpu03", "gpu04"],
    "gpu0*": ["gpu01", "gpu02", "gpu03", "gpu04"],
    "cpu:h100": ["cpu01", "cpu02", "gpu03", "gpu04"],
    "cpu,gpu02": ["cpu01", "cpu02", "gpu02"],
    "gpus:&connected": ["gpu01", "gpu03"],
    "gpus:!h100": ["gpu01", "gpu02"],
    "!gpus": ["loose01", "cpu01", "cpu02", "web1.example.com", "web2.example.com"],
    "gpus:!airgapped:&connected": ["gpu01", "gpu03"],
    "~gpu0[13]": ["gpu01", "gpu03"],
    "~web\\d": ["web1.example.com", "web2.example.com"],
    "*.example.com": ["web1.example.com", "web2.example.com"],
    "gpus[0]": ["gpu01"],
    "gpus[-1]": ["gpu04"],
    "gpus[1:2]": ["gpu02", "gpu03"],
    "gpus[2:]": ["gpu03", "gpu04"],
    "ungrouped": ["loose01"],
}


@pytest.mark.parametrize("pattern", list(CASES))
def test_select(inv: Inventory, pattern: str) -> None:
    assert names(inv, pattern) == CASES[pattern]


def test_unknown_name_suggests_closest(inv: Inventory) -> None:
    with pytest.raises(InventoryError) as err:
        inv.select("gpu1")
    assert "'gpu1' matches no host or group" in str(err.value)
    assert "gpu01" in str(err.value.hint) and "gpus" in str(err.value.hint)
    assert err.value.exit_code == 2


def test_typo_in_a_union_is_an_error(inv: Inventory) -> None:
    with pytest.raises(InventoryError, match="'conected' matches no host"):
        inv.select("gpus:conected")


def test_exclusion_of_nothing_is_fine(inv: Inventory) -> None:
    assert names(inv, "cpu:!nosuch") == ["cpu01", "cpu02"]


def test_empty_result_after_intersection(inv: Inventory) -> None:
    with pytest.raises(InventoryError, match="selects no hosts"):
        inv.select("cpu:&airgapped")


def test_bad_regex_and_subscript(inv: Inventory) -> None:
    with pytest.raises(InventoryError, match="invalid host pattern"):
        inv.select("~gpu(")
    with pytest.raises(InventoryError, match="out of range"):
        inv.select("gpus[9]")
    with pytest.raises(InventoryError, match="empty host pattern"):
        inv.select(" , ")


def test_host_lookup(inv: Inventory) -> None:
    assert inv.host("gpu02").groups == ("a100", "gpus")
    with pytest.raises(InventoryError, match="no host named 'gpu5'"):
        inv.host("gpu5")


@pytest.mark.skipif(ANSIBLE is None, reason="ansible (ansible-core) is not installed")
def test_same_hosts_as_ansible(tmp_path: Path) -> None:
    inv = load(str(FIXTURE))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "ANSIBLE_HOME": str(tmp_path),
           "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0"}
    # Set comparison: Ansible's order for nested groups depends on set iteration.
    for pattern in ["gpus:!h100", "gpus:&connected", "~gpu0[13]", "cpu,gpu02", "!gpus", "gpu0*", "*.example.com",
                    "gpus:!airgapped:&connected", "h100,cpu", "gpus[1:2]", "gpus[0]"]:
        proc = subprocess.run([str(ANSIBLE), "-i", str(FIXTURE), pattern, "--list-hosts"], check=False, capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=60)
        assert proc.returncode == 0, proc.stderr
        theirs = {line.strip() for line in proc.stdout.splitlines()[1:] if line.strip()}
        assert set(names(inv, pattern)) == theirs, pattern
