"""`deploy inventory list/show/add/remove` through the real CLI (subprocess) over real files.

Most tests need only files; the last one reads the testbed's generated inventory.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "unit" / "inventories"
BIN = Path(sys.executable).parent
ANSIBLE_INVENTORY = shutil.which("ansible-inventory", path=str(BIN))


def deploy(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    script = BIN / "deploy"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "deployer"]
    base = {k: v for k, v in os.environ.items() if k != "DEPLOY_INVENTORY"}
    proc = subprocess.run(
        [*argv, *args], capture_output=True, text=True, cwd=str(cwd or REPO), env={**base, **(env or {})},
        timeout=60, check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def ansible_hostvars(path: Path, tmp_path: Path) -> dict[str, dict]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "ANSIBLE_HOME": str(tmp_path),
           "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1", "ANSIBLE_LOCALHOST_WARNING": "0"}
    proc = subprocess.run([str(ANSIBLE_INVENTORY), "-i", str(path), "--list"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["_meta"]["hostvars"]


def assert_usage_error(result: tuple[int, str, str], *needles: str) -> None:
    code, out, err = result
    assert code == 2, (code, out, err)
    assert out == ""
    assert err.startswith("error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err, err


@pytest.mark.skipif(ANSIBLE_INVENTORY is None, reason="ansible-inventory is not installed")
def test_list_json_matches_ansible(tmp_path: Path) -> None:
    path = FIXTURES / "ini_sections" / "hosts.ini"
    code, out, err = deploy("-i", str(path), "inventory", "list", "--json")
    assert code == 0, err
    rows = json.loads(out)
    expected = ansible_hostvars(path, tmp_path)
    assert [r["name"] for r in rows] == ["loose01", "loose02", "gpu01", "gpu02", "gpu03", "gpu04", "cpu01"]
    for row in rows:
        assert set(row) == {"name", "address", "port", "user", "groups", "vars"}
        assert row["vars"] == expected.get(row["name"], {})
    gpu02 = next(r for r in rows if r["name"] == "gpu02")
    assert (gpu02["address"], gpu02["port"], gpu02["user"]) == ("10.0.0.2", 2202, None)
    assert gpu02["groups"] == ["a100", "datacenter", "gpus"]


def test_list_pattern_and_host_option_and_env(tmp_path: Path) -> None:
    path = str(FIXTURES / "patterns" / "hosts.yml")
    code, out, _ = deploy("-i", path, "inventory", "list", "gpus:!h100", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["gpu01", "gpu02"]
    code, out, _ = deploy("inventory", "list", "-H", "gpus:&connected", "--json", env={"DEPLOY_INVENTORY": path})
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["gpu01", "gpu03"]


def _cached_facts(tmp_path: Path, inventory: str) -> Path:
    """A facts cache as `deploy inventory check` leaves it, for three hosts of INVENTORY (keyed by machine)."""
    from deployer.inventory import load

    hosts = load(Path(inventory)).hosts
    cache = tmp_path / "cache"
    (cache / "deployer").mkdir(parents=True)
    facts = {
        hosts["gpu01"].machine: {
            "ok": True, "checked_at": "2026-05-01T10:00:00+00:00",
            "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1", "memory_total_mib": 81559},
                     {"index": 1, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-2", "memory_total_mib": 81559}]},
        hosts["cpu01"].machine: {"ok": True, "checked_at": "2026-05-01T10:00:00+00:00", "gpus": []},
        hosts["gpu02"].machine: {"ok": False, "error": "gpu02: cannot connect: timed out after 5s",
                                 "checked_at": "2026-05-01T10:00:01+00:00"},
    }
    (cache / "deployer" / "facts.json").write_text(json.dumps(facts))
    return cache


def test_list_table_shows_cached_facts(tmp_path: Path) -> None:
    path = str(FIXTURES / "patterns" / "hosts.yml")
    cache = _cached_facts(tmp_path, path)
    code, out, err = deploy("-i", path, "inventory", "list", "gpus,cpu01", env={"XDG_CACHE_HOME": str(cache)})
    assert code == 0, err
    lines = [line.split("\t") for line in out.splitlines()]
    assert lines[0] == ["NAME", "ADDRESS", "USER", "GROUPS", "VIA", "GPUS", "LAST CHECK"]
    rows = {row[0]: row for row in lines[1:]}
    assert rows["gpu01"][3:] == ["a100,connected,gpus", "auto", "2x NVIDIA H100 80GB HBM3", "ok 2026-05-01T10:00:00+00:00"]
    assert rows["cpu01"][5] == "-"
    assert rows["gpu02"][6].startswith("failed: gpu02: cannot connect: timed out")
    assert rows["gpu03"][5:] == ["", ""]


def test_list_never_shows_another_machines_facts_under_the_same_name(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A second inventory (a starter one, another site's) that names another machine gpu01 does not
    get the GPUs and the check of the gpu01 that was checked: the cache is per machine."""
    from deployer import factcache
    from deployer.inventory import load

    checked = str(FIXTURES / "patterns" / "hosts.yml")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    factcache.save(load(Path(checked)).hosts["gpu01"], {"ok": True, "gpus": [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1", "memory_total_mib": 81559}]})
    other = tmp_path / "other.yml"
    other.write_text("all:\n  hosts:\n    gpu01:\n      ansible_host: 192.0.2.11\n      ansible_user: ubuntu\n")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    code, out, err = deploy("-i", str(other), "inventory", "list", env=env)
    assert code == 0, err
    assert out.splitlines()[1].split("\t") == ["gpu01", "192.0.2.11", "ubuntu", "", "auto", "", ""]
    code, out, err = deploy("-i", checked, "inventory", "list", "gpu01", env=env)
    assert code == 0, err
    gpus, last_check = out.splitlines()[1].split("\t")[5:7]
    assert gpus == "1x NVIDIA H100 80GB HBM3" and last_check.startswith("ok 20")


def test_show_json_and_text() -> None:
    path = str(FIXTURES / "vars_dirs" / "hosts.yml")
    code, out, err = deploy("-i", path, "inventory", "show", "gpu01", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["vars"]["who"] == "host_vars-gpu01"
    assert data["origins"]["who"] == "host_vars/gpu01.yml"
    assert data["origins"]["gpus_only"] == "group_vars/gpus/10-base.yml"
    assert data["origins"]["source_all"] == "group_vars/all.yml"
    assert data["settings"]["registry"] == "10.0.0.5:5000"
    code, out, _ = deploy("-i", path, "inventory", "show", "gpu01")
    assert code == 0
    assert any(line.split("\t") == ["who", "host_vars-gpu01", "host_vars/gpu01.yml"] for line in out.splitlines())


def test_show_redacts_secrets(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text("all:\n  hosts:\n    gpu01:\n      ansible_password: hunter2\n      api_token: abc123\n")
    code, out, err = deploy("-i", str(path), "inventory", "show", "gpu01")
    assert code == 0 and "hunter2" not in out + err and "abc123" not in out + err
    assert "[REDACTED]" in out and "ansible_password" in err  # warned: passwords are ignored


def test_add_and_remove_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "example.yml"
    shutil.copy(REPO / "inventories" / "example.yml", path)
    before = path.read_text()
    code, _, err = deploy("-i", str(path), "inventory", "add", "lab-gpu09", "--address", "192.168.10.29",
                          "--port", "2200", "--user", "ops", "--group", "lab", "--group", "inference",
                          "--var", "deploy_via=registry", "--var", "slots=4")
    assert code == 0, err
    assert "added lab-gpu09" in err
    code, out, _ = deploy("-i", str(path), "inventory", "show", "lab-gpu09", "--json")
    data = json.loads(out)
    assert (data["address"], data["port"], data["user"]) == ("192.168.10.29", 2200, "ops")
    assert data["groups"] == ["gpus", "inference", "lab"] and data["vars"]["slots"] == 4
    assert_usage_error(deploy("-i", str(path), "inventory", "add", "lab-gpu09", "--address", "x"), "already exists")
    code, _, err = deploy("-i", str(path), "inventory", "remove", "lab-gpu09")
    assert code == 0, err
    assert path.read_text() == before


def test_add_refuses_ini() -> None:
    before = (FIXTURES / "ini_sections" / "hosts.ini").read_text()
    assert_usage_error(
        deploy("-i", str(FIXTURES / "ini_sections" / "hosts.ini"), "inventory", "add", "new1", "--address", "1.2.3.4"),
        "INI inventory",
    )
    assert (FIXTURES / "ini_sections" / "hosts.ini").read_text() == before


@pytest.mark.parametrize(
    "name, text, needles",
    [
        ("bad.yml", "all:\n  hosts:\n    gpu01: {x: 1\n", ["bad.yml:4", "malformed YAML"]),
        ("bad.ini", "[gpus]\ngpu01\n[gpus:nonsense]\n", ["bad.ini:3", "unknown type 'nonsense'"]),
        ("cycle.yml", "all:\n  children:\n    a:\n      children:\n        b:\n          children:\n            a:\n",
         ["cycle.yml:5", "all.children.a.children.b", "cycle"]),
        ("cycle.ini", "[a:children]\nb\n[b:children]\na\n", ["cycle.ini:", "cycle"]),
        # gpu[09:01] is an empty range for Ansible (not an error); a backwards letter range is one.
        ("range.yml", "all:\n  hosts:\n    gpu[c:a]:\n", ["range.yml:3", "all.hosts.gpu[c:a]", "bad host range"]),
        ("stamp.yml", "all:\n  hosts:\n    gpu01:\n      t: !!timestamp soon\n", ["stamp.yml:4", "!!timestamp"]),
        ("intgroup.yml", "all:\n  children:\n    1:\n      hosts:\n        gpu01:\n",
         ["intgroup.yml:3", "group name 1"]),
        ("plugin.yml", "plugin: amazon.aws.aws_ec2\n", ["plugin.yml:1", "plugin configurations are not supported"]),
        ("range.ini", "[gpus]\nnode[1:4:0]\n", ["range.ini:2", "bad host range"]),
    ],
)
def test_bad_input_exits_2_with_location(tmp_path: Path, name: str, text: str, needles: list[str]) -> None:
    path = tmp_path / name
    path.write_text(text)
    result = deploy("-i", str(path), "inventory", "list")
    assert_usage_error(result, *needles)
    assert len(result[2].strip().splitlines()) <= 2  # one message (plus an optional hint line)


def test_bad_input_traceback_only_with_verbose(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("all: [\n")
    code, _, err = deploy("-v", "-i", str(path), "inventory", "list")
    assert code == 2 and "Traceback" in err


def test_unknown_host_and_missing_path(tmp_path: Path) -> None:
    path = str(FIXTURES / "patterns" / "hosts.yml")
    assert_usage_error(deploy("-i", path, "inventory", "show", "gpu5"), "no host named 'gpu5'", "did you mean hosts gpu0")
    assert_usage_error(deploy("-i", path, "inventory", "show", "gpus"), "is a group")
    assert_usage_error(deploy("-i", path, "inventory", "list", "nosuch"), "'nosuch' matches no host or group")
    assert_usage_error(deploy("-i", str(tmp_path / "nope.yml"), "inventory", "list"), "does not exist", "-i PATH")
    assert_usage_error(deploy("inventory", "list", cwd=tmp_path), "no inventory given", "inventories/hosts.yml")


def test_default_inventory_in_cwd(tmp_path: Path) -> None:
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "hosts.yml").write_text("all:\n  hosts:\n    here01:\n")
    code, out, _ = deploy("inventory", "list", "--json", cwd=tmp_path)
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["here01"]


def test_help_has_examples() -> None:
    for cmd in ("list", "show", "add", "remove"):
        code, out, _ = deploy("inventory", cmd, "--help")
        assert code == 0 and "Examples:" in out and "deploy inventory " + cmd in out


@pytest.mark.skipif(ANSIBLE_INVENTORY is None, reason="ansible-inventory is not installed")
def test_testbed_inventory(testbed, tmp_path: Path) -> None:
    code, out, err = deploy("-i", testbed.inventory, "inventory", "list", "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == {"gpu01", "gpu02", "airgap01", "cpu01", "airgap02", "airgap03"}
    expected = ansible_hostvars(Path(testbed.inventory), tmp_path)
    for name, row in rows.items():
        assert row["vars"] == expected[name]
        assert row["address"] == testbed.hosts[name].address
    assert rows["airgap01"]["groups"] == ["airgapped", "gpus", "site"]
    assert rows["airgap02"]["groups"] == ["site"]
    code, out, _ = deploy("-i", testbed.inventory, "inventory", "list", "gpus:!airgapped", "--json")
    assert [r["name"] for r in json.loads(out)] == ["gpu01", "gpu02"]


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "all:\n", "{}\n"])
def test_empty_inventory_lists_nothing(tmp_path: Path, text: str) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text(text)
    code, out, err = deploy("-i", str(path), "inventory", "list", "--json")
    assert code == 0, err
    # `{}` is no YAML inventory; read as INI (as Ansible does) it is one host named "{}"
    assert [r["name"] for r in json.loads(out)] == (["{}"] if text == "{}\n" else [])


@pytest.mark.skipif(ANSIBLE_INVENTORY is None, reason="ansible-inventory is not installed")
def test_odd_connection_values_are_listed_with_warnings(tmp_path: Path) -> None:
    path = FIXTURES / "templated" / "hosts.yml"
    code, out, err = deploy("-i", str(path), "inventory", "list", "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    expected = ansible_hostvars(path, tmp_path)
    assert {n: r["vars"] for n, r in rows.items()} == expected
    assert (rows["gpu01"]["address"], rows["gpu01"]["port"]) == ("gpu01.lab.example", 2222)
    assert rows["gpu02"]["port"] is None and rows["gpu03"]["port"] is None
    assert rows["gpu04"]["address"] == "10.0.0.4" and rows["gpu04"]["user"] == "{{ undefined_user }}"
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3 and all("check, ship and run will refuse" in w for w in warnings), err
    assert "ansible_port 'PORT'" in err and "70000" in err and "'undefined_user' is undefined" in err
    code, out, err = deploy("-i", str(path), "inventory", "show", "gpu02")
    assert code == 0 and out.startswith("gpu02  gpu02.lab.example:PORT  ") and "refuse gpu02" in err


@pytest.mark.skipif(ANSIBLE_INVENTORY is None, reason="ansible-inventory is not installed")
def test_list_json_prints_values_as_ansible_does(tmp_path: Path) -> None:
    # !unsafe / !vault values, dates and YAML 1.1 scalars: the same JSON as ansible-inventory --list
    for path in (FIXTURES / "yaml_tags" / "hosts.yml", FIXTURES / "mixed_dir"):
        code, out, err = deploy("-i", str(path), "inventory", "list", "--json")
        assert code == 0, err
        assert {r["name"]: r["vars"] for r in json.loads(out)} == ansible_hostvars(path, tmp_path)
    assert "README:1: skipped this file" in err and "aws_ec2.yml:1: skipped this file" in err
