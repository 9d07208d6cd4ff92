"""A host as deployer sees it: merged inventory vars plus the settings derived from them."""
from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_STAGING_DIR = "/var/tmp/deployer"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
VIA_CHOICES = ("auto", "registry", "tarball")


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
        # ansible_ssh_* are Ansible's older spellings, still honoured by Ansible itself.
        return str(self.vars.get("ansible_host") or self.vars.get("ansible_ssh_host") or self.name)

    @property
    def port(self) -> int:
        value = self.vars.get("ansible_port") or self.vars.get("ansible_ssh_port") or 22
        try:
            port = int(value)
        except (TypeError, ValueError):
            port = 0
        if not 0 < port < 65536:
            from deployer.errors import InventoryError

            raise InventoryError(f"host {self.name}: ansible_port {value!r} is not a TCP port", key_path="ansible_port")
        return port

    @property
    def user(self) -> str | None:
        user = self.vars.get("ansible_user") or self.vars.get("ansible_ssh_user")
        return str(user) if user else None

    @property
    def key_file(self) -> str | None:
        key = self.vars.get("ansible_ssh_private_key_file") or self.vars.get("ansible_private_key_file")
        return os.path.expanduser(str(key)) if key else None

    @property
    def via(self) -> str:
        return str(self.vars.get("deploy_via") or "auto")

    @property
    def registry(self) -> str | None:
        reg = self.vars.get("deploy_registry")
        return str(reg) if reg else None

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
        from deployer.inventory.jump import jump_of

        try:
            return jump_of(self.vars)
        except ValueError as exc:
            raise InventoryError(f"host {self.name}: {exc}", key_path="deploy_jump") from None

    @property
    def known_hosts(self) -> str:
        return os.path.expanduser(str(self.vars.get("deploy_known_hosts") or DEFAULT_KNOWN_HOSTS))
