"""Connection values templated with the host's vars as Ansible does; a bad one fails only its host, when used."""
from __future__ import annotations

from pathlib import Path

import pytest

from deployer.errors import InventoryError
from deployer.inventory import Inventory, load, report
from deployer.inventory.host import Host
from deployer.inventory.values import Encrypted, Unsafe
from deployer.transport.config import ConnectSpec, resolve

INVENTORY = """\
all:
  vars:
    domain: lab.example
    ssh_port: 2222
  children:
    gpus:
      vars:
        ansible_host: "{{ inventory_hostname }}.{{ domain }}"
        ansible_user: "{{ owner | default('ml') }}"
      hosts:
        gpu01:
        gpu02:
          owner: ops
          ansible_port: "{{ ssh_port }}"
        gpu03:
          ansible_port: "{{ missing_port }}"
        gpu04:
          ansible_port: 70000
        gpu05:
          ansible_host: "{{ site_ip }}"
          site_ip: "{{ base }}.5"
          base: 10.0.0
"""


@pytest.fixture()
def inventory(tmp_path: Path) -> Inventory:
    path = tmp_path / "hosts.yml"
    path.write_text(INVENTORY)
    return load(str(path))


def test_templates_use_the_hosts_vars(inventory: Inventory) -> None:
    gpu01, gpu02, gpu05 = inventory.host("gpu01"), inventory.host("gpu02"), inventory.host("gpu05")
    assert (gpu01.address, gpu01.port, gpu01.user) == ("gpu01.lab.example", 22, "ml")
    assert (gpu02.address, gpu02.port, gpu02.user) == ("gpu02.lab.example", 2222, "ops")
    assert gpu05.address == "10.0.0.5"  # a var the template uses is itself a template
    # The vars stay as written, as ansible-inventory lists them.
    assert gpu02.vars["ansible_port"] == "{{ ssh_port }}"


def test_a_bad_value_fails_only_its_host_and_only_when_used(inventory: Inventory) -> None:
    gpu03, gpu04 = inventory.host("gpu03"), inventory.host("gpu04")
    assert gpu03.address == "gpu03.lab.example"  # the rest of the host is usable
    with pytest.raises(InventoryError, match=r"host gpu03: ansible_port: .*'missing_port' is undefined"):
        _ = gpu03.port
    with pytest.raises(InventoryError, match=r"host gpu04: ansible_port 70000 is not a TCP port"):
        _ = gpu04.port
    with pytest.raises(InventoryError, match="gpu03"):
        resolve(gpu03)
    assert resolve(inventory.host("gpu02")).port == 2222


def test_list_shows_them_with_a_warning(inventory: Inventory) -> None:
    hosts = list(inventory.hosts.values())
    rows = {h.name: report.host_json(h) for h in hosts}
    assert rows["gpu03"]["port"] is None and rows["gpu03"]["vars"]["ansible_port"] == "{{ missing_port }}"
    assert rows["gpu04"]["port"] is None and rows["gpu04"]["vars"]["ansible_port"] == 70000
    assert (rows["gpu02"]["address"], rows["gpu02"]["port"]) == ("gpu02.lab.example", 2222)
    assert report.address_cell(inventory.host("gpu04")) == "gpu04.lab.example:70000"
    warnings = report.connection_warnings(hosts)
    assert len(warnings) == 2
    assert warnings[0].startswith("host gpu03: ansible_port") and warnings[0].endswith("refuse gpu03")
    assert "70000" in warnings[1]


def test_resolve_connects_to_the_rendered_values(inventory: Inventory) -> None:
    spec = resolve(inventory.host("gpu02"))
    assert (spec.address, spec.port, spec.user) == ("gpu02.lab.example", 2222, "ops")


def test_unsafe_and_vault_values() -> None:
    # !unsafe text is used as written (never rendered); a vault value cannot be decrypted.
    assert Host("h", {"ansible_user": Unsafe("{{ x }}")}).user == "{{ x }}"
    with pytest.raises(InventoryError, match="not a host name or address"):
        _ = Host("h", {"ansible_host": Unsafe("{{ x }}")}).address
    with pytest.raises(InventoryError, match="vault"):
        _ = Host("h", {"ansible_user": Encrypted("$ANSIBLE_VAULT;1.1;AES256\n6162\n")}).user


def test_template_loops_and_errors_are_clear() -> None:
    host = Host("h", {"ansible_host": "{{ a }}", "a": "{{ b }}", "b": "{{ a }}"})
    with pytest.raises(InventoryError, match=r"loop: a -> b -> a"):
        _ = host.address
    with pytest.raises(InventoryError, match="cannot render"):
        _ = Host("h", {"ansible_host": "{{ oops"}).address
    assert Host("h", {"ansible_port": "22{{ n }}", "n": 22}).port == 2222
    assert Host("h", {"ansible_ssh_port": "{{ p }}", "p": "2200"}).port == 2200
    assert Host("h.dc", {"ansible_host": "{{ inventory_hostname_short }}-mgmt"}).address == "h-mgmt"


def test_a_bad_jump_is_a_warning_in_show() -> None:
    host = Host("r1", {"ansible_ssh_common_args": "-o ProxyJump=jump@bastion:22#22"})
    assert report.settings(host)["jump"] is None
    assert any("not a jump host" in w and w.endswith("refuse r1") for w in report.connection_warnings([host]))


def test_ssh_args_are_templated_for_the_jump_host() -> None:
    host = Host("gpu01", {"ansible_ssh_common_args": "-o ProxyJump={{ bastion_user }}@{{ bastion }}",
                          "bastion_user": "ops", "bastion": "gw.example:2222"})
    assert host.jump == "ops@gw.example:2222"
    assert resolve(host).jump is not None and resolve(host).jump.address == "gw.example"  # type: ignore[union-attr]
    with pytest.raises(InventoryError, match=r"host gpu01: deploy_jump: .*'nowhere' is undefined"):
        _ = Host("gpu01", {"deploy_jump": "{{ nowhere }}"}).jump


def test_the_ssh_timeout_is_a_templated_number_of_seconds_and_the_connect_waits_that_long(monkeypatch) -> None:
    from deployer.transport import ssh

    hosts = {name: Host(name, vars) for name, vars in {
        "far": {"ansible_ssh_timeout": "{{ slow }}", "slow": 45},
        "near": {"ansible_ssh_timeout": 2.5},
        "plain": {},
        "zero": {"ansible_ssh_timeout": 0},
        "word": {"ansible_ssh_timeout": "soon"},
    }.items()}
    assert (hosts["far"].ssh_timeout, hosts["near"].ssh_timeout, hosts["plain"].ssh_timeout) == (45.0, 2.5, None)
    for name in ("zero", "word"):
        with pytest.raises(InventoryError, match=f"host {name}: ansible_ssh_timeout .* is not a number of seconds"):
            _ = hosts[name].ssh_timeout
        assert hosts[name].connection_problems() and "ansible_ssh_timeout" in hosts[name].connection_problems()[0]
    # the host's own timeout wins over the command's
    waited: list[float] = []

    def open_link(spec: object, *, host: str, timeout: float, trust_name: str) -> object:
        waited.append(timeout)
        raise InventoryError("stop here")

    monkeypatch.setattr(ssh, "open_link", open_link)
    for name in ("far", "plain"):
        with pytest.raises(InventoryError, match="stop here"):
            ssh.connect(hosts[name], timeout=10.0, ssh_config=None)
    assert waited == [45.0, 10.0]


def test_deploy_inventory_trust_waits_the_hosts_own_ssh_timeout_too(monkeypatch) -> None:
    from deployer.transport import trust

    waited: list[float] = []

    def fetch_key(spec: object, *, host: str, timeout: float) -> object:
        waited.append(timeout)
        raise InventoryError("stop here")

    monkeypatch.setattr(trust, "fetch_key", fetch_key)
    spec = ConnectSpec("10.0.0.1", 22, user="u", known_hosts="/nonexistent/known_hosts")
    for vars in ({"ansible_ssh_timeout": 3}, {}):
        with pytest.raises(InventoryError, match="stop here"):
            trust.offer(Host("gpu01", vars), spec=spec, timeout=10.0)
    assert waited == [3.0, 10.0]
