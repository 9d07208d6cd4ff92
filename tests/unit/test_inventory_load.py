"""Loading: error messages with file:line and key path, origins of vars, defaults, jump hosts."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from deployer.errors import InventoryError
from deployer.inventory import load, resolve_path
from deployer.inventory.host import Host
from deployer.inventory.jump import from_ssh_args, normalize

INVENTORIES = Path(__file__).parent / "inventories"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def error_of(path: str) -> InventoryError:
    with pytest.raises(InventoryError) as err:
        load(path)
    assert err.value.exit_code == 2
    return err.value


def test_malformed_yaml_has_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.yml", "all:\n  hosts:\n    gpu01:\n      x: [1, 2\n    gpu02:\n")
    err = error_of(path)
    assert err.file == path and err.line is not None and err.line >= 4
    assert str(err).startswith(f"{path}:{err.line}: malformed YAML")


def test_hosts_as_a_list_names_the_key_path(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.yml", "all:\n  children:\n    gpus:\n      hosts:\n        - gpu01\n")
    err = error_of(path)
    assert (err.line, err.key_path) == (5, "all.children.gpus.hosts")
    assert "'hosts' must be a mapping" in str(err)


def test_host_vars_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.yml", "all:\n  hosts:\n    gpu01: 5\n")
    err = error_of(path)
    assert (err.line, err.key_path) == (3, "all.hosts.gpu01")


def test_yaml_cycle(tmp_path: Path) -> None:
    text = "all:\n  children:\n    a:\n      children:\n        b:\n          children:\n            a:\n"
    err = error_of(write(tmp_path, "hosts.yml", text))
    # b's own child a is added first, so the edge a -> b closes the loop
    assert "adding group 'b' as a child of 'a' creates a cycle: b -> a -> b" in str(err)
    assert err.line == 5 and err.key_path == "all.children.a.children.b"


def test_ini_cycle(tmp_path: Path) -> None:
    text = "[a:children]\nb\n[b:children]\nc\n[c:children]\na\n[c]\nh1\n"
    err = error_of(write(tmp_path, "hosts.ini", text))
    assert "cycle" in str(err) and err.file is not None and err.line is not None


def test_group_child_of_itself(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, "hosts.ini", "[a]\nh\n[a:children]\na\n"))
    assert "child of itself" in str(err) and err.line == 4


def test_bad_range_yaml_and_ini(tmp_path: Path) -> None:
    # A backwards letter range is refused by Ansible (a backwards numeric one is only empty).
    err = error_of(write(tmp_path, "hosts.yml", "all:\n  hosts:\n    gpu[c:a]:\n"))
    assert "bad host range" in str(err) and err.line == 3 and err.key_path == "all.hosts.gpu[c:a]"
    err = error_of(write(tmp_path, "hosts.ini", "[gpus]\ngpu01\ngpu[1:x]\n"))
    assert "bad host range" in str(err) and err.line == 3


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("[gpus:vars]\nx=1\n", 1, "is for group 'gpus', which is not defined"),
        ("[top:children]\nmissing\n", 2, "names group 'missing', which is not defined"),
        ("[gpus:weird]\n", 1, "unknown type 'weird'"),
        ("[gpus]\ngpu01 novalue\n", 2, "expected key=value"),
        ("[gpus:vars]\n", None, None),
        ("[bad name]\n", 1, "invalid section header"),
        ("[gpus]\ngpu01:\n", 2, "ends in ':'"),
        ("[gpus]\ngpu01 x='unterminated\n", 2, "cannot parse host line"),
    ],
)
def test_malformed_ini(tmp_path: Path, text: str, line: int | None, words: str | None) -> None:
    path = write(tmp_path, "hosts.ini", text)
    if words is None:
        # [g:vars] with no group declared and no vars is still an undefined group
        assert "not defined" in str(error_of(path))
        return
    err = error_of(path)
    assert words in str(err) and err.line == line and err.file == path


def test_ini_children_declared_later(tmp_path: Path) -> None:
    inv = load(write(tmp_path, "hosts.ini", "[top:children]\nmid\n[mid:children]\nleaf\n[leaf]\nh1\n"))
    assert inv.host("h1").groups == ("leaf", "mid", "top")


def test_empty_and_non_mapping_yaml(tmp_path: Path) -> None:
    # Like ansible-inventory: an empty YAML file is an empty inventory (its INI reading finds nothing).
    for text in ("", "# nothing\n", "all:\n", "---\nall:\n"):
        inv = load(write(tmp_path, "a.yml", text))
        assert inv.hosts == {} and set(inv.groups) == {"all", "ungrouped"}, text
    err = error_of(write(tmp_path, "b.yml", "- gpu01\n"))
    assert "must be a mapping" in str(err) and err.line == 1
    # A bare '---' is no inventory for Ansible either: empty as YAML, and '---' is no INI host.
    err = error_of(write(tmp_path, "c.yml", "---\n"))
    assert "empty" in str(err) and "as INI" in str(err.hint)


def test_backwards_numeric_range_is_empty_with_a_warning(tmp_path: Path) -> None:
    inv = load(write(tmp_path, "hosts.yml", "all:\n  children:\n    gpus:\n      hosts:\n        gpu[04:01]:\n        gpu05:\n"))
    assert list(inv.hosts) == ["gpu05"]
    assert any(":5:" in w and "gpu[04:01]" in w and "empty" in w for w in inv.warnings), inv.warnings


def test_bad_vars_file(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.yml", "all:\n  hosts:\n    gpu01:\n")
    write(tmp_path, "group_vars/all.yml", "- not\n- a mapping\n")
    err = error_of(path)
    assert err.file == str(tmp_path / "group_vars/all.yml") and "mapping" in str(err)


def test_missing_path() -> None:
    err = error_of("/nonexistent/inventory.yml")
    assert "does not exist" in str(err) and "-i" in str(err.hint)


def test_unknown_yaml_keys_are_warnings(tmp_path: Path) -> None:
    inv = load(write(tmp_path, "hosts.yml", "all:\n  hostz:\n    gpu01:\n  hosts:\n    gpu02:\n"))
    assert list(inv.hosts) == ["gpu02"]
    assert any("hostz" in w and ":2:" in w for w in inv.warnings)


def test_origins_name_each_source() -> None:
    inv = load(str(INVENTORIES / "vars_dirs" / "hosts.yml"))
    gpu01, gpu02, gpu03 = inv.host("gpu01"), inv.host("gpu02"), inv.host("gpu03")
    assert gpu01.vars["who"] == "host_vars-gpu01"
    assert gpu01.origins["who"] == os.path.join("host_vars", "gpu01.yml")
    assert gpu02.origins["who"] == os.path.join("host_vars", "gpu02", "b.yml")
    assert gpu02.origins["from_a"] == os.path.join("host_vars", "gpu02", "a.yml")
    assert gpu03.vars["who"] == "group_vars-gpus-20"  # group_vars beat every inventory-file group var
    assert gpu03.origins["gpus_only"] == os.path.join("group_vars", "gpus", "10-base.yml")
    assert gpu03.origins["deep"] == os.path.join("group_vars", "gpus", "extra", "30-deep.yml")
    assert gpu03.origins["deploy_registry"] == os.path.join("group_vars", "all.yml")
    cpu = inv.host("cpu01")
    assert cpu.origins["who"] == os.path.join("group_vars", "cpu.json") and cpu.vars["cores"] == 64


def test_origins_for_inventory_vars() -> None:
    inv = load(str(INVENTORIES / "ini_sections" / "hosts.ini"))
    gpu02 = inv.host("gpu02")
    assert gpu02.origins["deploy_via"] == "inventory group a100 (hosts.ini)"
    assert gpu02.origins["ansible_port"] == "inventory host (hosts.ini)"
    assert gpu02.origins["deploy_staging_dir"] == "inventory group all (hosts.ini)"
    assert gpu02.port == 2202 and gpu02.staging_dir == "/var/tmp/lab" and gpu02.via == "tarball"


def test_host_settings_defaults() -> None:
    h = Host("gpu09")
    assert (h.address, h.port, h.user, h.via, h.staging_dir, h.docker, h.jump) == (
        "gpu09", 22, None, "auto", "/var/tmp/deployer", ("docker",), None,
    )
    assert Host("x", {"deploy_docker": "sudo -n docker"}).docker == ("sudo", "-n", "docker")


def test_jumps_from_inventory() -> None:
    inv = load(str(INVENTORIES / "jumps" / "hosts.yml"))
    assert inv.host("r1").jump == "jump@bastion.example:2222"
    assert inv.host("r2").jump == "ops@other-bastion"
    assert inv.host("r3").jump == "edge@gw:22"
    assert inv.host("r4").jump == "admin@legacy-gw"
    assert inv.host("r5").jump is None


@pytest.mark.parametrize(
    "args, jump",
    [
        ("-o ProxyJump=bastion", "bastion"),
        ("-o 'ProxyJump ssh://u@b:2200'", "u@b:2200"),
        ("-oProxyJump=a@b,c@d:3", "a@b,c@d:3"),
        ("-Jops@bastion:2222", "ops@bastion:2222"),
        ("-o ProxyJump=none", None),
        ("-o ProxyCommand='ssh -p 2022 -W %h:%p admin@gw'", "admin@gw:2022"),
        ("-o ProxyCommand='nc -X 5 -x proxy:1080 %h %p'", None),
        ("-o ControlMaster=auto -o ControlPersist=60s", None),
        ("", None),
    ],
)
def test_jump_parsing(args: str, jump: str | None) -> None:
    assert from_ssh_args(args) == jump


def test_bad_deploy_jump() -> None:
    with pytest.raises(ValueError):
        normalize("user@host:notaport")
    with pytest.raises(InventoryError, match="gpu01"):
        _ = Host("gpu01", {"deploy_jump": "a b c"}).jump


def test_resolve_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InventoryError) as err:
        resolve_path(None)
    assert "inventories/hosts.yml" in str(err.value) and "DEPLOY_INVENTORY" in str(err.value.hint)
    write(tmp_path, "inventories/hosts.ini", "gpu01\n")
    assert resolve_path(None) == "inventories/hosts.ini"
    write(tmp_path, "inventories/hosts.yml", "all:\n  hosts:\n    gpu01:\n")
    assert resolve_path(None) == "inventories/hosts.yml"
    assert resolve_path("inventories") == "inventories"
    with pytest.raises(InventoryError, match="does not exist"):
        resolve_path("nope.yml")


def test_directory_ignores_backups_and_docs() -> None:
    inv = load(str(INVENTORIES / "inv_dir"))
    assert list(inv.hosts) == ["gpu01", "gpu02", "dc-gpu01", "dc-gpu02", "dc-gpu03"]
    assert inv.host("gpu01").origins["site"] == os.path.join("group_vars", "shared.yml")
    assert inv.host("dc-gpu02").origins["site"] == "inventory group dc (02-dc)"


def test_host_settings_from_vars() -> None:
    h = Host("gpu01", {"ansible_ssh_host": "10.0.0.1", "ansible_ssh_port": "2222", "ansible_ssh_user": "ops",
                       "ansible_private_key_file": "~/k", "deploy_registry": "r:5000", "deploy_via": "registry",
                       "deploy_staging_dir": "/scratch", "deploy_known_hosts": "/etc/kh"})
    assert (h.address, h.port, h.user, h.registry, h.via, h.staging_dir, h.known_hosts) == (
        "10.0.0.1", 2222, "ops", "r:5000", "registry", "/scratch", "/etc/kh",
    )
    assert h.key_file == os.path.expanduser("~/k")
    assert Host("a", {"ansible_host": "x", "ansible_ssh_host": "y"}).address == "x"
    with pytest.raises(InventoryError, match="not a TCP port"):
        _ = Host("gpu01", {"ansible_port": "ssh"}).port


def test_the_error_shown_is_that_of_the_format_meant(tmp_path: Path) -> None:
    # Ansible tries YAML, then INI; the error shown is that of the format the file is written in.
    err = error_of(write(tmp_path, "noext", "all:\n  hosts:\n    gpu01: {x: 1\n"))
    assert "malformed YAML" in str(err) and err.line == 4 and err.hint is None
    err = error_of(write(tmp_path, "noext2", "[gpus]\ngpu01\ngpu02 x\n"))
    assert "expected key=value" in str(err) and err.line == 3
    err = error_of(write(tmp_path, "bad.yml", "all:\n  hosts:\n    gpu01: {x: 1\n"))
    assert "malformed YAML" in str(err) and err.hint is None  # no INI noise for a broken .yml
    err = error_of(write(tmp_path, "list.yml", "- gpu01\n"))
    assert "got a list" in str(err) and "as INI" in str(err.hint)


def test_directory_skips_what_no_format_reads(tmp_path: Path) -> None:
    # Deliberate difference: ansible-core 2.19 keeps what a file added before it failed (its
    # manager notes the missing rollback as a FUTURE fix); deployer skips the whole file.
    write(tmp_path, "inv/hosts.yml", "all:\n  hosts:\n    gpu01:\n")
    write(tmp_path, "inv/aws_ec2.yaml", "plugin: amazon.aws.aws_ec2\n")
    write(tmp_path, "inv/README", "Lab hosts live here.\n")
    write(tmp_path, "inv/broken.yml", "all:\n  hosts:\n    - gpu02\n")
    write(tmp_path, "inv/late.yml", "all:\n  children:\n    gpus:\n      hosts:\n        gpu03:\n    bad:\n      hosts: [x]\n")
    inv = load(str(tmp_path / "inv"))
    assert list(inv.hosts) == ["gpu01"] and "gpus" not in inv.groups
    skipped = sorted(w.split(":")[0].rsplit("/", 1)[-1] for w in inv.warnings if "skipped this file" in w)
    assert skipped == ["README", "aws_ec2.yaml", "broken.yml", "late.yml"]
    # Nothing readable at all is still an error.
    write(tmp_path, "bad/README", "Lab hosts live here.\n")
    assert "no inventory file that can be read" in str(error_of(str(tmp_path / "bad")))


def test_yaml_loader_keeps_ansible_tags(tmp_path: Path) -> None:
    inv = load(write(tmp_path, "hosts.yml", "all:\n  hosts:\n    gpu01:\n      a: !unsafe '{{ x }}'\n"
                                            "      v: !vault |\n        $ANSIBLE_VAULT;1.1;AES256\n        6162\n"))
    a, v = inv.host("gpu01").vars["a"], inv.host("gpu01").vars["v"]
    assert (type(a).__name__, a) == ("Unsafe", "{{ x }}") and (type(v).__name__, v) == ("Encrypted", "$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    write(tmp_path, "group_vars/all.yml", "u: !unsafe '{%'\nd: 1\nd: 2\n")
    inv = load(str(tmp_path / "hosts.yml"))
    assert inv.host("gpu01").vars["u"] == "{%" and inv.host("gpu01").vars["d"] == 2
    assert any("group_vars/all.yml:3: duplicate key 'd'" in w for w in inv.warnings)


def test_control_characters_are_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_bytes(b"all:\n  hosts:\n    gpu\x0001:\n")
    err = error_of(str(path))
    assert err.line == 3 and "unacceptable character #x0000" in str(err)


def test_latin1_bytes(tmp_path: Path) -> None:
    # INI keeps them (as Ansible's ini plugin does); YAML must be UTF-8, and says so even without an extension.
    (tmp_path / "hosts").write_bytes(b"# caf\xe9\n[gpus]\ngpu01\n")
    assert list(load(str(tmp_path / "hosts")).hosts) == ["gpu01"]
    (tmp_path / "inv").write_bytes(b"# caf\xe9\nall:\n  hosts:\n    gpu01:\n")
    err = error_of(str(tmp_path / "inv"))
    assert "not UTF-8" in str(err) and err.line == 1
    (tmp_path / "bad").write_bytes(b"# caf\xe9\n[gpus]\ngpu01 x\n")
    err = error_of(str(tmp_path / "bad"))
    assert "expected key=value" in str(err) and err.line == 3


def test_pyyaml_without_libyaml_loads_the_same(tmp_path: Path) -> None:
    """The loader reads YAML events with libyaml when PyYAML has it, with PyYAML's own parser when
    not: the same data, warnings and located errors either way."""
    import json
    import subprocess
    import sys

    (tmp_path / "ok.yml").write_text("all:\n  hosts:\n    gpu01: {ansible_host: 10.0.0.1, slots: 4}\n"
                                     "    gpu01: {ansible_port: 2222}\n  vars: {x: !unsafe '{{ y }}'}\n")
    (tmp_path / "bad.yml").write_bytes(b"all:\n  hosts:\n    gpu\x0001:\n")
    script = (
        "import json, sys\n"
        "if sys.argv[1] == 'pure': sys.modules['yaml._yaml'] = None\n"
        "from deployer.inventory import yamlload\n"
        "from deployer.errors import InventoryError\n"
        "doc = yamlload.load(open(sys.argv[2]).read(), 'ok.yml')\n"
        "try:\n"
        "    yamlload.load(open(sys.argv[3], encoding='utf-8').read(), 'bad.yml'); err = None\n"
        "except InventoryError as exc:\n"
        "    err = [str(exc), exc.line]\n"
        "print(json.dumps([doc.data, doc.warnings, err, yamlload._Parser.__module__]))\n"
    )
    runs = [json.loads(subprocess.run([sys.executable, "-c", script, mode, str(tmp_path / "ok.yml"),
                                       str(tmp_path / "bad.yml")], check=True, capture_output=True,
                                      text=True).stdout) for mode in ("pure", "libyaml")]
    assert runs[0][3] != runs[1][3]  # the two parsers really ran
    assert runs[0][:2] == runs[1][:2]
    data, warnings, _, _ = runs[0]
    assert data == {"all": {"hosts": {"gpu01": {"ansible_port": 2222}}, "vars": {"x": "{{ y }}"}}}
    assert warnings == ["ok.yml:4: duplicate key 'gpu01': using the last value only (as Ansible does)"]
    for _, _, err, _ in runs:  # the reason's words are each parser's own ("control"/"special characters")
        assert err[1] == 3 and err[0].startswith("bad.yml:3: malformed YAML: unacceptable character #x0000: ")
