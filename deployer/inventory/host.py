"""A host as deployer sees it: merged inventory vars plus the settings derived from them."""
from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deployer.errors import InventoryError

DEFAULT_STAGING_DIR = "/var/tmp/deployer"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
VIA_CHOICES = ("auto", "registry", "tarball")  # deploy_via
ORIGIN_MODES = ("auto", "never")  # deploy_origin_pull: may the host pull an image's base from its registry
RELAY_FALLBACKS = ("direct", "fail")  # deploy_relay_fallback: when the site's relay cannot serve the host
DEFAULT_RELAY_FANOUT = 8  # deploy_relay_fanout: hosts one node of a site's relay tree passes blobs on to
DEFAULT_AUTHORIZED_KEYS = "~/.ssh/authorized_keys"


@dataclass(frozen=True)
class Host:
    """One inventory host. `vars` are merged exactly as ansible-inventory merges them."""

    name: str
    vars: Mapping[str, Any] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    # var name -> where its value came from, e.g. "group_vars/gpus.yml" (for `inventory show`).
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def address(self) -> str:
        """Where to connect: ansible_host (templated with the host's vars, as Ansible does), else the name."""
        return str(self._connection("address") or self.name)

    @property
    def port(self) -> int:
        """The SSH port from ansible_port (templated), else 22; InventoryError when it is no TCP port."""
        return self.explicit_port or 22

    @property
    def explicit_port(self) -> int | None:
        """The port the inventory sets (templated), None when it sets none (ssh config may then set one)."""
        port = self._connection("port")
        return int(port) if port is not None else None

    @property
    def user(self) -> str | None:
        user = self._connection("user")
        return str(user) if user else None

    @property
    def machine(self) -> str:
        """user@address:port, the machine behind the name: what the workstation remembers of a host
        (facts, layers, probes) is kept under it, so two inventories that give one name to two
        machines never mix them up, and two names for one machine share what is known of it."""
        return f"{self.user or ''}@{self.address}:{self.port}"

    @property
    def key_file(self) -> str | None:
        key = self._connection("key_file")
        return os.path.expanduser(str(key)) if key else None

    @property
    def ssh_timeout(self) -> float | None:
        """Seconds to wait for the SSH connection (ansible_ssh_timeout, templated); None: the command's."""
        seconds = self._connection("timeout")
        return float(seconds) if seconds is not None else None

    def connect_timeout(self, default: float) -> float:
        """Seconds to wait for this host's SSH connection: its ansible_ssh_timeout, else DEFAULT."""
        return self.ssh_timeout or default

    def _connection(self, setting: str) -> Any:
        # Ansible's connection values are templates rendered with the host's vars when used.
        from deployer.inventory import connection

        return connection.value(self.name, self.vars, self.groups, setting)

    def connection_problems(self) -> list[str]:
        """Why a connection value of this host cannot be used (none when all can): for list/show warnings."""
        from deployer.errors import InventoryError

        problems = []
        for name in ("address", "explicit_port", "user", "key_file", "ssh_timeout", "jump"):
            try:
                getattr(self, name)
            except InventoryError as exc:
                problems.append(exc.reason)
        return problems

    @property
    def via(self) -> str:
        return str(self.vars.get("deploy_via") or "auto")

    @property
    def origin_pull(self) -> str:
        return str(self.vars.get("deploy_origin_pull") or "auto")

    def _optional(self, key: str) -> str | None:
        """An inventory var that may be unset or empty (then None)."""
        value = self.vars.get(key)
        return str(value) if value else None

    @property
    def relay(self) -> str | None:
        """deploy_relay: the inventory host inside the host's site through which it receives blobs."""
        return self._optional("deploy_relay")

    @property
    def relay_fallback(self) -> str:
        return str(self.vars.get("deploy_relay_fallback") or "direct")

    @property
    def relay_fanout(self) -> int:
        """deploy_relay_fanout: at most how many hosts one node of the site's relay tree passes each
        blob on to (InventoryError unless a whole number >= 1)."""
        value = self.vars.get("deploy_relay_fanout")
        if value is None or value == "":
            return DEFAULT_RELAY_FANOUT
        text = str(value).strip()
        if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
            raise InventoryError(f"host {self.name}: deploy_relay_fanout is {value!r}; use a whole number >= 1 "
                                 f"(default {DEFAULT_RELAY_FANOUT})", key_path="deploy_relay_fanout")
        return int(text)

    @property
    def authorized_keys(self) -> str:
        """deploy_authorized_keys: where a relay's per-ship key is authorized on the host."""
        return str(self.vars.get("deploy_authorized_keys") or DEFAULT_AUTHORIZED_KEYS)

    @property
    def internal_ip(self) -> str | None:
        """deploy_internal_ip: the host's address on the network its site or job shares."""
        value = self.vars.get("deploy_internal_ip")
        return str(value).strip() or None if value is not None else None

    @property
    def registry(self) -> str | None:
        return self._optional("deploy_registry")

    @property
    def staging_dir(self) -> str:
        return str(self.vars.get("deploy_staging_dir") or DEFAULT_STAGING_DIR)

    @property
    def docker(self) -> tuple[str, ...]:
        """The remote Docker command as argv, e.g. ('sudo', 'docker')."""
        return tuple(shlex.split(str(self.vars.get("deploy_docker") or "docker")))

    @property
    def jump(self) -> str | None:
        """Jump host as `[user@]host[:port]` from deploy_jump or ProxyJump/-J in ansible_ssh_*_args."""
        from deployer.errors import InventoryError
        from deployer.inventory import connection
        from deployer.inventory.jump import JUMP_VARS, jump_of

        try:
            # Ansible templates the ssh args with the host's vars too.
            return jump_of(connection.rendered(self.name, self.vars, self.groups, JUMP_VARS))
        except ValueError as exc:
            raise InventoryError(f"host {self.name}: {exc}", key_path="deploy_jump") from None

    @property
    def known_hosts(self) -> str:
        return os.path.expanduser(str(self.vars.get("deploy_known_hosts") or DEFAULT_KNOWN_HOSTS))
