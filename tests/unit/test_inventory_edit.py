"""`inventory add/remove` edits: comments, order and layout kept; refusals are clear (exit 2)."""
from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest

from deployer.errors import InventoryError
from deployer.inventory import load
from deployer.inventory.edit import NewHost, add, parse_var, remove

EXAMPLE = Path(__file__).parents[2] / "inventories" / "example.yml"

SMALL = """\
# top comment
all:
  vars:
    ansible_user: root   # everyone is root here
  hosts:
    gpu01:
      ansible_host: 10.0.0.1
  children:
    gpus:
      hosts:
        gpu01:
        gpu02: {ansible_host: 10.0.0.2}  # flow style kept
    cpu:
      hosts:
        cpu01:
          ansible_host: 10.0.0.9
          tags:
            - a
            - b
"""


def added_lines(before: str, after: str) -> list[str]:
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    assert not [d for d in diff if d.startswith("- ")], "existing lines changed:\n" + "\n".join(diff)
    return [d[2:] for d in diff if d.startswith("+ ")]


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(SMALL)
    return path


def test_add_into_existing_group_keeps_everything(small: Path) -> None:
    add(str(small), NewHost("gpu03", "10.0.0.3", port=2222, user="ml", groups=("gpus",), vars=(("deploy_via", "tarball"),)))
    after = small.read_text()
    assert added_lines(SMALL, after) == [
        "        gpu03:",
        "          ansible_host: 10.0.0.3",
        "          ansible_port: 2222",
        "          ansible_user: ml",
        "          deploy_via: tarball",
    ]
    h = load(str(small)).host("gpu03")
    assert (h.address, h.port, h.user, h.via, h.groups) == ("10.0.0.3", 2222, "ml", "tarball", ("gpus",))


def test_add_new_group_and_several_groups(small: Path) -> None:
    add(str(small), NewHost("gpu04", "10.0.0.4", groups=("gpus", "h100")))
    after = small.read_text()
    added = added_lines(SMALL, after)
    assert added == ["        gpu04:", "          ansible_host: 10.0.0.4", "    h100:", "      hosts:", "        gpu04:"]
    assert load(str(small)).host("gpu04").groups == ("gpus", "h100")


def test_add_without_group_goes_to_all(small: Path) -> None:
    add(str(small), NewHost("solo", "10.0.0.50"))
    assert added_lines(SMALL, small.read_text()) == ["    solo:", "      ansible_host: 10.0.0.50"]


def test_add_into_example_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "example.yml"
    shutil.copy(EXAMPLE, path)
    before = path.read_text()
    add(str(path), NewHost("lab-gpu04", "192.168.10.24", groups=("lab", "training")))
    added = added_lines(before, path.read_text())
    assert "        lab-gpu04:" in added and "          ansible_host: 192.168.10.24" in added
    assert load(str(path)).host("lab-gpu04").groups == ("gpus", "lab", "training")


def test_add_refuses_existing_host(small: Path) -> None:
    with pytest.raises(InventoryError, match="already exists") as err:
        add(str(small), NewHost("gpu02", "1.2.3.4"))
    assert err.value.exit_code == 2 and small.read_text() == SMALL


def test_refuses_ini(tmp_path: Path) -> None:
    for name in ("hosts.ini", "hosts"):
        path = tmp_path / name
        path.write_text("[gpus]\ngpu01\n")
        with pytest.raises(InventoryError, match="INI inventory"):
            add(str(path), NewHost("gpu02", "1.2.3.4"))
        with pytest.raises(InventoryError, match="INI inventory"):
            remove(str(path), "gpu01")
        assert path.read_text() == "[gpus]\ngpu01\n"


def test_refuses_directory_of_many(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text("all:\n  hosts:\n    a1:\n")
    (tmp_path / "b.yml").write_text("all:\n  hosts:\n    b1:\n")
    with pytest.raises(InventoryError, match="directory of 2 files"):
        add(str(tmp_path), NewHost("c1", "1.2.3.4"))


def test_directory_with_one_file_is_edited(tmp_path: Path) -> None:
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    a1:\n")
    (tmp_path / "group_vars").mkdir()
    add(str(tmp_path), NewHost("c1", "1.2.3.4"))
    assert list(load(str(tmp_path)).hosts) == ["a1", "c1"]


def test_remove_from_every_group(small: Path) -> None:
    _, groups = remove(str(small), "gpu01")
    assert groups == ["all", "gpus"]
    after = small.read_text()
    assert "gpu01" not in after
    assert "# top comment" in after and "# everyone is root here" in after and "# flow style kept" in after
    inv = load(str(small))
    assert list(inv.hosts) == ["gpu02", "cpu01"]


def test_remove_last_host_of_group_drops_empty_hosts(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text("all:\n  children:\n    cpu:\n      hosts:\n        cpu01:\n    gpus:\n      hosts:\n        g1:\n")
    remove(str(path), "cpu01")
    assert path.read_text() == "all:\n  children:\n    cpu: {}\n    gpus:\n      hosts:\n        g1:\n"
    assert list(load(str(path)).hosts) == ["g1"]


def test_remove_refuses_a_host_from_a_range(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text("all:\n  hosts:\n    gpu[01:04]:\n")
    with pytest.raises(InventoryError, match=r"range 'gpu\[01:04\]'") as err:
        remove(str(path), "gpu02")
    assert err.value.line == 3


def test_remove_unknown_host_suggests(small: Path) -> None:
    with pytest.raises(InventoryError, match="no host named 'gpu5'") as err:
        remove(str(small), "gpu5")
    assert "gpu01" in str(err.value.hint)


def test_parse_var() -> None:
    assert parse_var("n=5") == ("n", 5)
    assert parse_var("flag=true") == ("flag", True)
    assert parse_var("path=/data/x") == ("path", "/data/x")
    assert parse_var("empty=") == ("empty", "")
    assert parse_var("list=[1,2]") == ("list", "[1,2]")
    with pytest.raises(InventoryError):
        parse_var("novalue")
    with pytest.raises(InventoryError):
        parse_var("bad key=1")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "gpus:\n  hosts:\n    gpu01:\n      ansible_host: 10.0.0.1\n"),
        ("# lab fleet\n", "# lab fleet\ngpus:\n  hosts:\n    gpu01:\n      ansible_host: 10.0.0.1\n"),
        ("all:\n", "all:\n  children:\n    gpus:\n      hosts:\n        gpu01:\n          ansible_host: 10.0.0.1\n"),
    ],
)
def test_add_to_an_empty_inventory(tmp_path: Path, text: str, expected: str) -> None:
    # An empty inventory is a valid one (as for ansible-inventory), so hosts can be added to it.
    path = tmp_path / "hosts.yml"
    path.write_text(text)
    add(str(path), NewHost("gpu01", "10.0.0.1", groups=("gpus",)))
    assert path.read_text() == expected
    assert load(str(path)).host("gpu01").groups == ("gpus",)


def test_a_yml_file_read_as_ini_is_not_edited(tmp_path: Path) -> None:
    # Ansible (and deployer) read this .yml file as INI, so it cannot be edited as YAML.
    path = tmp_path / "hosts.yml"
    path.write_text("[gpus]\ngpu01 ansible_host=10.0.0.1\n")
    with pytest.raises(InventoryError, match="is an INI inventory"):
        add(str(path), NewHost("gpu02", "10.0.0.2"))
    assert path.read_text() == "[gpus]\ngpu01 ansible_host=10.0.0.1\n"
