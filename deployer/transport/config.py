"""Resolve how to reach a host: inventory vars merged with ~/.ssh/config (pure except loading).

Explicit inventory vars (ansible_host/port/user/private key) win; ssh config fills the rest,
looked up by the name ssh would be given (ansible_host, else the inventory name), as Ansible
does. Jump hosts come from `deploy_jump`, `ansible_ssh_common_args`/`ansible_ssh_extra_args`
(`-J`, `-o ProxyJump=`, parsed by deployer.inventory.jump), or the ssh config's ProxyJump.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import paramiko

from deployer.errors import InventoryError
from deployer.inventory import connection
from deployer.inventory.host import DEFAULT_KNOWN_HOSTS, Host
from deployer.inventory.jump import JUMP_VARS, SSH_ARG_VARS

# What ssh tries when no IdentityFile is configured (IdentitiesOnly=no).
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
_MAX_JUMPS = 8


@dataclass(frozen=True)
class ConnectSpec:
    """Everything needed to open one SSH connection (and the chain of jumps before it)."""

    address: str
    port: int = 22
    user: str | None = None
    key_files: tuple[str, ...] = ()
    jump: ConnectSpec | None = None
    known_hosts: str = field(default_factory=lambda: os.path.expanduser(DEFAULT_KNOWN_HOSTS))
    name: str = ""  # inventory name or alias: also a known_hosts lookup name
    identities_only: bool = False

    @property
    def label(self) -> str:
        """user@address:port, for messages."""
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port != 22 else ""
        return f"{user}{self.address}{port}"

    def known_host_names(self) -> tuple[str, ...]:
        """Names under which this host's key may be recorded in known_hosts, best first."""
        names: list[str] = []
        for n in (self.address, self.name):
            if not n:
                continue
            entry = n if self.port == 22 else f"[{n}]:{self.port}"
            if entry not in names:
                names.append(entry)
        return tuple(names)


def load_ssh_config(path: str | None = None) -> paramiko.SSHConfig | None:
    """The user's ssh config (~/.ssh/config, or $DEPLOY_SSH_CONFIG; 'none' disables)."""
    path = path or os.environ.get("DEPLOY_SSH_CONFIG") or "~/.ssh/config"
    if path.lower() == "none":
        return None
    p = Path(os.path.expanduser(path))
    if not p.is_file():
        return None
    try:
        return paramiko.SSHConfig.from_path(str(p))
    except (OSError, ValueError, paramiko.SSHException) as exc:
        raise InventoryError(f"cannot read ssh config: {exc}", file=str(p)) from exc


def parse_jump(text: str) -> tuple[str | None, str, int | None]:
    """`[ssh://][user@]host[:port]` -> (user, host, port)."""
    text = text.strip()
    if text.startswith("ssh://"):
        text = text[len("ssh://"):].rstrip("/")
    user, _, hostport = text.rpartition("@")
    host, port = hostport, None
    if hostport.startswith("["):  # [v6addr]:port
        inner, _, rest = hostport[1:].partition("]")
        host = inner
        if rest.startswith(":"):
            port = _port(rest[1:], text)
    elif hostport.count(":") == 1:
        host, _, p = hostport.partition(":")
        port = _port(p, text)
    if not host:
        raise InventoryError(f"bad jump host {text!r}: expected [user@]host[:port]", key_path="deploy_jump")
    return (user or None), host, port


def _port(text: str, whole: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise InventoryError(f"bad port in jump host {whole!r}", key_path="deploy_jump")
    return port


def _jump_text(host: Host, cfg: Mapping[str, Any]) -> str | None:
    explicit = host.jump  # templated as Ansible does; InventoryError naming the host when malformed
    if explicit:
        return explicit
    if _disables_jump(connection.rendered(host.name, host.vars, host.groups, JUMP_VARS)):
        return None
    if cfg.get("proxyjump"):
        return str(cfg["proxyjump"])
    return None


_JUMP_NONE = re.compile(r"(?i)(proxyjump\s*[= ]\s*none|-J\s*none)(\s|$|')")


def _disables_jump(vars: Mapping[str, Any]) -> bool:
    # An explicit "none" in the inventory overrides the ssh config's ProxyJump, as on ssh's command line.
    if str(vars.get("deploy_jump") or "").strip().lower() == "none":
        return True
    return any(_JUMP_NONE.search(str(vars.get(k) or "")) for k in SSH_ARG_VARS)


def _lookup(ssh_config: paramiko.SSHConfig | None, name: str) -> dict[str, Any]:
    return dict(ssh_config.lookup(name)) if ssh_config is not None else {"hostname": name}


def _known_hosts(vars: Mapping[str, Any], cfg: Mapping[str, Any]) -> str:
    if vars.get("deploy_known_hosts"):
        return os.path.expanduser(str(vars["deploy_known_hosts"]))
    configured = cfg.get("userknownhostsfile")
    if configured:
        return os.path.expanduser(str(configured).split()[0])
    return os.path.expanduser(DEFAULT_KNOWN_HOSTS)


def _key_files(explicit: str | None, cfg: Mapping[str, Any]) -> tuple[tuple[str, ...], bool]:
    keys: list[str] = []
    if explicit:
        keys.append(os.path.expanduser(explicit))
    for k in cfg.get("identityfile", []) or []:
        k = os.path.expanduser(str(k))
        if k not in keys:
            keys.append(k)
    only = str(cfg.get("identitiesonly", "no")).lower() == "yes"
    return tuple(keys), only


def _chain(hops: str, ssh_config: paramiko.SSHConfig | None, known_hosts: str,
           fallback_keys: tuple[str, ...], depth: int) -> ConnectSpec | None:
    """Build the spec of the LAST hop in a comma-separated ProxyJump list, jumps chained before it."""
    if hops.strip().lower() == "none":
        return None
    if depth > _MAX_JUMPS:
        raise InventoryError(f"jump hosts nest more than {_MAX_JUMPS} deep (a ProxyJump loop?)", key_path="deploy_jump")
    spec: ConnectSpec | None = None
    for hop in [h for h in hops.split(",") if h.strip()]:
        user, alias, port = parse_jump(hop)
        cfg = _lookup(ssh_config, alias)
        keys, only = _key_files(None, cfg)
        if spec is None and cfg.get("proxyjump"):
            spec = _chain(str(cfg["proxyjump"]), ssh_config, known_hosts, fallback_keys, depth + 1)
        spec = ConnectSpec(
            address=str(cfg.get("hostname") or alias),
            port=port or int(cfg.get("port") or 22),
            user=user or (str(cfg["user"]) if cfg.get("user") else None),
            # The jump usually takes the same key as the target: try the target's keys too.
            key_files=keys + tuple(k for k in fallback_keys if k not in keys),
            jump=spec,
            known_hosts=known_hosts,
            name=alias,
            identities_only=only,
        )
    return spec


def resolve(host: Host, ssh_config: paramiko.SSHConfig | None = None) -> ConnectSpec:
    """Merge the host's inventory vars with the ssh config into a ConnectSpec."""
    vars = host.vars
    # Host's connection values are templated with its vars, as Ansible does (InventoryError if they fail).
    dest = host.address
    cfg = _lookup(ssh_config, dest)
    keys, only = _key_files(host.key_file, cfg)
    known_hosts = _known_hosts(vars, cfg)
    port = host.explicit_port or cfg.get("port") or 22
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise InventoryError(f"host {host.name}: port {port!r} is not a number", key_path="ansible_port") from None
    user = host.user or cfg.get("user")
    jump_text = _jump_text(host, cfg)
    jump = _chain(jump_text, ssh_config, known_hosts, keys, 1) if jump_text else None
    return ConnectSpec(
        address=str(cfg.get("hostname") or dest),
        port=port,
        user=str(user) if user else None,
        key_files=keys,
        jump=jump,
        known_hosts=known_hosts,
        name=host.name,
        identities_only=only,
    )


def with_user(spec: ConnectSpec, user: str) -> ConnectSpec:
    """The same spec with a user filled in (used when the spec left it to the local default)."""
    return replace(spec, user=user)
