"""INI inventories: `[group]`, `[group:children]`, `[group:vars]`, inline `k=v` host vars, `host:port`.

Lines before the first section belong to `ungrouped`. A group named in `:children` may be
declared later in the file; `[g:vars]` needs `g` declared somewhere. Values are typed by
deployer.inventory.values.ini_value, as Ansible types them.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from deployer.inventory.builder import InventoryBuilder, Where
from deployer.inventory.hostnames import RangeError, expand, split_port
from deployer.inventory.values import ini_value

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_GROUP_NAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")
_COMMENT = (";", "#")


@dataclass
class _Pending:
    line: int
    state: str
    parents: list[str] = field(default_factory=list)


def parse(text: str, file: str, label: str, builder: InventoryBuilder) -> None:
    """Add the groups, hosts and vars of one INI inventory file to `builder`."""
    host_label = f"inventory host ({label})"
    pending: dict[str, _Pending] = {}
    group, state = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in _COMMENT:
            continue
        where = Where(file, label, number, f"[{group}{'' if state == 'hosts' else ':' + state}]")
        m = _SECTION.match(line)
        if m:
            group, tag = m.group(1), m.group(2)
            state = tag or "hosts"
            where = Where(file, label, number, line)
            if state not in ("hosts", "children", "vars"):
                raise where.error(f"section {line} has unknown type {state!r}", hint="use [name], [name:vars] or [name:children]")
            if group not in builder.groups:
                if state == "vars" and group not in pending:
                    pending[group] = _Pending(number, state)
                builder.add_group(group, where)
            if group in pending and state != "vars":
                if pending[group].state == "children":
                    _add_pending_children(builder, group, pending, where)
                else:
                    del pending[group]
            continue
        if line.startswith("[") and line.endswith("]"):
            raise where.error(f"invalid section header {line!r}", hint="section names may not contain spaces or ':' other than :vars/:children")
        if state == "hosts":
            _host_line(builder, line, group, where, host_label)
        elif state == "vars":
            if "=" not in line:
                raise where.error(f"expected key=value, got {line!r}")
            key, value = (part.strip() for part in line.split("=", 1))
            at = Where(file, f"inventory group {group} ({label})", number, f"[{group}:vars].{key}")
            builder.set_group_var(group, key, ini_value(value), at)
        else:
            m = _GROUP_NAME.match(line)
            if not m:
                raise where.error(f"expected a group name, got {line!r}")
            child = m.group(1)
            if child in builder.groups:
                builder.add_child(group, child, where)
            elif child in pending:
                pending[child].parents.append(group)
            else:
                pending[child] = _Pending(number, "children", [group])
    for name, decl in pending.items():
        if decl.state == "vars":
            raise Where(file, label, decl.line, f"[{name}:vars]").error(
                f"[{name}:vars] is for group {name!r}, which is not defined",
                hint=f"declare it with a [{name}] or [{name}:children] section",
            )
        raise Where(file, label, decl.line, f"[{decl.parents[-1]}:children]").error(
            f"[{decl.parents[-1]}:children] names group {name!r}, which is not defined",
            hint=f"declare it with a [{name}] section (hosts) or [{name}:children] section",
        )


def _add_pending_children(builder: InventoryBuilder, group: str, pending: dict[str, _Pending], where: Where) -> None:
    for parent in pending[group].parents:
        builder.add_child(parent, group, where)
        if parent in pending and pending[parent].state == "children":
            _add_pending_children(builder, parent, pending, where)
    del pending[group]


def _host_line(builder: InventoryBuilder, line: str, group: str, where: Where, label: str) -> None:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:
        raise where.error(f"cannot parse host line {line!r}: {exc}") from None
    if not tokens:
        return
    entry = tokens[0]
    name, port = split_port(entry)
    if entry.endswith(":") and port is None:
        raise where.error(f"host {entry!r} ends in ':'", hint="write host:PORT, or remove the ':'")
    try:
        names = expand(name)
    except RangeError as exc:
        raise where.error(f"bad host range: {exc}") from None
    if not names:
        builder.warnings.append(f"{where.file}:{where.line}: {entry}: the range is empty (its begin is past its end): no host added")
    if "---" in names:
        raise where.error("'---' is not a host name (it starts a YAML document); is this a YAML file with an .ini name?")
    variables = {}
    for token in tokens[1:]:
        if "=" not in token:
            raise where.error(f"expected key=value host variable, got {token!r}")
        key, value = token.split("=", 1)
        variables[key] = ini_value(value)
    at = Where(where.file, label, where.line, f"{where.key_path}.{entry}")
    for host in names:
        builder.add_host(host, at, group=group, port=port)
        for key, value in variables.items():
            builder.set_host_var(host, key, value, at)
