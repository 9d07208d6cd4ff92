"""Unit tests for resolve(): inventory vars merged with ~/.ssh/config, jump hosts."""
from __future__ import annotations

import os

import paramiko
import pytest

from deployer.errors import InventoryError
from deployer.inventory.host import Host
from deployer.transport.config import ConnectSpec, load_ssh_config, parse_jump, resolve

SSH_CONFIG = """
Host gpu01
    HostName 10.1.0.11
    User alice
    Port 2201
    IdentityFile ~/.ssh/gpu_key

Host gpu02 gpu02-alias
    HostName 10.1.0.12
    ProxyJump bastion

Host bastion
    HostName bastion.example.net
    User jumper
    Port 2222
    IdentityFile ~/.ssh/bastion_key

Host inner
    HostName 192.168.7.7
    ProxyJump mid

Host mid
    HostName 10.9.9.9
    ProxyJump bastion

Host strict
    IdentitiesOnly yes
    IdentityFile /keys/only
    UserKnownHostsFile /etc/deployer/known_hosts

Host *.lab
    User labuser

Host *
    ServerAliveInterval 30
"""


@pytest.fixture()
def cfg() -> paramiko.SSHConfig:
    return paramiko.SSHConfig.from_text(SSH_CONFIG)


def home(p: str) -> str:
    return os.path.expanduser(p)


def test_plain_inventory_host_without_ssh_config() -> None:
    spec = resolve(Host("gpu01", {"ansible_host": "10.213.0.11", "ansible_user": "root",
                                  "ansible_ssh_private_key_file": "/k/id", "deploy_known_hosts": "/k/kh"}))
    assert spec == ConnectSpec(address="10.213.0.11", port=22, user="root", key_files=("/k/id",), jump=None,
                               known_hosts="/k/kh", name="gpu01")
    assert spec.known_host_names() == ("10.213.0.11", "gpu01")
    assert spec.label == "root@10.213.0.11"


def test_ssh_config_fills_what_the_inventory_leaves_out(cfg: paramiko.SSHConfig) -> None:
    spec = resolve(Host("gpu01"), cfg)
    assert (spec.address, spec.port, spec.user) == ("10.1.0.11", 2201, "alice")
    assert spec.key_files == (home("~/.ssh/gpu_key"),)
    assert spec.known_hosts == home("~/.ssh/known_hosts")
    assert spec.known_host_names() == ("[10.1.0.11]:2201", "[gpu01]:2201")


def test_explicit_inventory_vars_win_over_ssh_config(cfg: paramiko.SSHConfig) -> None:
    spec = resolve(Host("gpu01", {"ansible_port": 22, "ansible_user": "root",
                                  "ansible_ssh_private_key_file": "~/inv_key"}), cfg)
    assert (spec.address, spec.port, spec.user) == ("10.1.0.11", 22, "root")
    # the explicit key is tried first, ssh config's IdentityFile after it
    assert spec.key_files == (home("~/inv_key"), home("~/.ssh/gpu_key"))


def test_ansible_host_is_what_ssh_config_is_looked_up_by(cfg: paramiko.SSHConfig) -> None:
    spec = resolve(Host("trainer", {"ansible_host": "gpu02-alias"}), cfg)
    assert spec.address == "10.1.0.12" and spec.name == "trainer"
    assert spec.jump is not None and spec.jump.address == "bastion.example.net"


def test_ansible_host_ip_is_not_rewritten(cfg: paramiko.SSHConfig) -> None:
    spec = resolve(Host("gpu01", {"ansible_host": "10.5.5.5"}), cfg)
    assert (spec.address, spec.port, spec.user) == ("10.5.5.5", 22, None)


def test_wildcard_host_blocks_apply(cfg: paramiko.SSHConfig) -> None:
    assert resolve(Host("node3.lab"), cfg).user == "labuser"


def test_ssh_config_proxyjump_is_resolved_through_ssh_config_too(cfg: paramiko.SSHConfig) -> None:
    spec = resolve(Host("gpu02", {"ansible_ssh_private_key_file": "/k/id"}), cfg)
    assert spec.jump == ConnectSpec(
        address="bastion.example.net", port=2222, user="jumper",
        key_files=(home("~/.ssh/bastion_key"), "/k/id"),  # its own key first, then the target's
        jump=None, known_hosts=home("~/.ssh/known_hosts"), name="bastion",
    )


def test_nested_proxyjump_chain(cfg: paramiko.SSHConfig) -> None:
    spec = resolve(Host("inner"), cfg)
    assert spec.address == "192.168.7.7"
    assert spec.jump is not None and spec.jump.address == "10.9.9.9"
    assert spec.jump.jump is not None and spec.jump.jump.address == "bastion.example.net"
    assert spec.jump.jump.jump is None


@pytest.mark.parametrize(
    "vars",
    [
        {"deploy_jump": "root@10.213.0.11:22"},
        {"ansible_ssh_common_args": "-o ProxyJump=root@10.213.0.11:22"},
        {"ansible_ssh_common_args": "-o StrictHostKeyChecking=yes -J root@10.213.0.11"},
        {"ansible_ssh_common_args": "-Jroot@10.213.0.11"},
        {"ansible_ssh_common_args": "-o 'ProxyJump root@10.213.0.11'"},
        {"ansible_ssh_extra_args": "-J ssh://root@10.213.0.11:22"},
    ],
)
def test_jump_from_inventory_vars(vars: dict[str, str]) -> None:
    spec = resolve(Host("gpu02", {"ansible_host": "10.213.0.12", "ansible_ssh_private_key_file": "/k/id",
                                  "deploy_known_hosts": "/k/kh", **vars}))
    assert spec.jump == ConnectSpec(address="10.213.0.11", port=22, user="root", key_files=("/k/id",),
                                    known_hosts="/k/kh", name="10.213.0.11")


def test_deploy_jump_wins_over_ssh_args_and_ssh_config(cfg: paramiko.SSHConfig) -> None:
    spec = resolve(Host("gpu02", {"deploy_jump": "ops@other:2022", "ansible_ssh_common_args": "-J x@y"}), cfg)
    assert spec.jump is not None and (spec.jump.user, spec.jump.address, spec.jump.port) == ("ops", "other", 2022)


def test_multi_hop_jump_list_chains_in_order() -> None:
    spec = resolve(Host("t", {"deploy_jump": "a@first,b@second:2200"}))
    assert spec.jump is not None and (spec.jump.user, spec.jump.address, spec.jump.port) == ("b", "second", 2200)
    assert spec.jump.jump is not None and (spec.jump.jump.user, spec.jump.jump.address) == ("a", "first")


@pytest.mark.parametrize(
    "vars",
    [{"ansible_ssh_common_args": "-o ProxyJump=none"}, {"ansible_ssh_common_args": "-J none -o X=y"},
     {"deploy_jump": "none"},
     # templated, as Ansible renders them before ssh reads them
     {"deploy_jump": "{{ j }}", "j": "none"}, {"ansible_ssh_common_args": "{{ args }}", "args": "-J none"}],
)
def test_explicit_none_disables_the_ssh_config_jump(cfg: paramiko.SSHConfig, vars: dict[str, str]) -> None:
    assert resolve(Host("gpu02", vars), cfg).jump is None
    assert resolve(Host("gpu02"), cfg).jump is not None


def test_identities_only_and_user_known_hosts_file(cfg: paramiko.SSHConfig) -> None:
    spec = resolve(Host("strict"), cfg)
    assert spec.identities_only is True and spec.key_files == ("/keys/only",)
    assert spec.known_hosts == "/etc/deployer/known_hosts"
    # deploy_known_hosts (an inventory var) wins over UserKnownHostsFile
    assert resolve(Host("strict", {"deploy_known_hosts": "/mine"}), cfg).known_hosts == "/mine"


def test_non_standard_port_known_host_names() -> None:
    spec = resolve(Host("h", {"ansible_host": "10.0.0.1", "ansible_port": "2222"}))
    assert spec.port == 2222
    assert spec.known_host_names() == ("[10.0.0.1]:2222", "[h]:2222")
    assert spec.label == "10.0.0.1:2222"


def test_bad_port_is_an_inventory_error() -> None:
    with pytest.raises(InventoryError, match="port 'abc' is not a number"):
        resolve(Host("h", {"ansible_port": "abc"}))


def test_bad_jump_is_an_inventory_error() -> None:
    with pytest.raises(InventoryError, match="deploy_jump"):
        resolve(Host("h", {"deploy_jump": "user@host:notaport"}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host", (None, "host", None)),
        ("u@host", ("u", "host", None)),
        ("u@host:2200", ("u", "host", 2200)),
        ("ssh://u@host:2200", ("u", "host", 2200)),
        ("[fe80::1]:22", (None, "fe80::1", 22)),
        ("fe80::1", (None, "fe80::1", None)),
    ],
)
def test_parse_jump(text: str, expected: tuple[str | None, str, int | None]) -> None:
    assert parse_jump(text) == expected


def test_load_ssh_config(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "config"
    p.write_text("Host a\n  HostName 1.2.3.4\n")
    conf = load_ssh_config(str(p))
    assert conf is not None and conf.lookup("a")["hostname"] == "1.2.3.4"
    assert load_ssh_config(str(tmp_path / "missing")) is None
    monkeypatch.setenv("DEPLOY_SSH_CONFIG", "none")
    assert load_ssh_config() is None
