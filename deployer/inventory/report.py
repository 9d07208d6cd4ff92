"""Pure views of hosts for the `inventory` commands: JSON objects, table cells, redaction."""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from deployer.inventory import connection
from deployer.inventory.host import Host
from deployer.inventory.values import jsonable

REDACTED = "[REDACTED]"
_SECRET = re.compile(r"(pass(word|wd)?|secret|token|api_?key|credential)s?$|_pass$|^ansible_(ssh_|become_)?pass", re.IGNORECASE)


def is_secret(key: str) -> bool:
    """Vars whose values must never be shown (passwords, tokens)."""
    return bool(_SECRET.search(key))


def shown(host: Host, setting: str) -> Any:
    """A connection value for list/show: templated when it can be, else as written (as ansible-inventory shows it).

    A port that is no TCP port, or a jump that is no jump host, is shown as None; `connection_warnings` says why.
    """
    from deployer.errors import InventoryError

    try:
        return getattr(host, setting)
    except InventoryError:
        if setting in ("port", "jump"):
            return None
        _key, written = connection.raw(host.vars, setting)
        return None if written is None else str(written)


def connection_warnings(hosts: list[Host]) -> list[str]:
    """One line per host whose connection values cannot be used: check, ship and run refuse that host."""
    return [f"{p}; check, ship and run will refuse {h.name}" for h in hosts for p in h.connection_problems()]


def host_json(host: Host) -> dict[str, Any]:
    """The `inventory list --json` object: vars exactly as ansible-inventory reports them."""
    return {
        "name": host.name,
        "address": shown(host, "address"),
        "port": shown(host, "port"),
        "user": shown(host, "user"),
        "groups": list(host.groups),
        "vars": jsonable(dict(host.vars)),
    }


def show_json(host: Host) -> dict[str, Any]:
    """`inventory show --json`: the host, its vars (secrets redacted), where each came from, settings."""
    return {
        **host_json(host),
        "vars": jsonable(redact(host.vars)),
        "origins": {k: host.origins.get(k, "") for k in host.vars},
        "settings": settings(host),
    }


def settings(host: Host) -> dict[str, Any]:
    """deployer's view of the host's connection and deploy settings (defaults filled in)."""
    return {
        "key_file": shown(host, "key_file"),
        "jump": shown(host, "jump"),
        "via": host.via,
        "registry": host.registry,
        "staging_dir": host.staging_dir,
        "docker": list(host.docker),
        "known_hosts": host.known_hosts,
    }


def redact(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (REDACTED if is_secret(k) and v not in (None, "") else v) for k, v in values.items()}


def address_cell(host: Host) -> str:
    port = shown(host, "port")
    if port is None:
        _key, written = connection.raw(host.vars, "port")
        port = written if written is not None else 22
    address = shown(host, "address")
    return address if port == 22 else f"{address}:{port}"


def gpus_cell(facts: Mapping[str, Any] | None) -> str:
    """'2x NVIDIA H100 80GB HBM3' from cached check facts; '' when unknown, '-' when none."""
    if not facts or not isinstance(facts.get("gpus"), list):
        return ""
    names = Counter(str(g.get("name", "?")) for g in facts["gpus"] if isinstance(g, dict))
    if not names:
        return "-"
    return ", ".join(f"{n}x {name}" for name, n in names.items())


def check_cell(facts: Mapping[str, Any] | None) -> str:
    """'ok 2026-05-01T10:00:00+00:00' or 'failed: <reason> (<when>)' from cached check facts."""
    if not facts:
        return ""
    when = str(facts.get("checked_at", ""))
    if facts.get("ok"):
        return f"ok {when}".strip()
    reason = str(facts.get("error") or "failed").splitlines()[0]
    if len(reason) > 60:
        reason = reason[:57] + "..."
    return f"failed: {reason} ({when})" if when else f"failed: {reason}"


def password_warnings(hosts: list[Host]) -> list[str]:
    """deployer authenticates with keys/agent only; say so when an inventory stores passwords."""
    out = []
    for h in hosts:
        keys = sorted(k for k in h.vars if k in ("ansible_password", "ansible_ssh_pass", "ansible_ssh_password"))
        if keys:
            out.append(f"{h.name}: {', '.join(keys)} is ignored; deployer uses SSH keys or the agent only")
    return out
