"""Mutable inventory state while files are parsed; mirrors Ansible's InventoryData rules.

Parsers call add_group/add_host/add_child/set_*_var; `finish()` applies the final rules
(top-level groups become children of `all`, hosts in no group land in `ungrouped`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from deployer.errors import InventoryError

ALL = "all"
UNGROUPED = "ungrouped"
# Ansible's test for a valid group name (constants.INVALID_VARIABLE_NAMES); it warns and keeps the name.
_INVALID_GROUP_CHARS = re.compile(r"^[\d\W]|[^\w]")


@dataclass
class GroupState:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    priority: int = 1


@dataclass
class HostState:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)


@dataclass
class Where:
    """Where a parser is: file (as shown to users), line, key path; used in errors and origins."""

    file: str
    label: str
    line: int | None = None
    key_path: str | None = None

    def error(self, message: str, hint: str | None = None) -> InventoryError:
        return InventoryError(message, file=self.file, line=self.line, key_path=self.key_path, hint=hint)


class InventoryBuilder:
    """Hosts and groups in the order they were first seen."""

    def __init__(self) -> None:
        self.groups: dict[str, GroupState] = {ALL: GroupState(ALL), UNGROUPED: GroupState(UNGROUPED)}
        self.hosts: dict[str, HostState] = {}
        self.groups[ALL].children.append(UNGROUPED)
        self.groups[UNGROUPED].parents.append(ALL)
        self.warnings: list[str] = []

    def add_group(self, name: str, where: Where | None = None) -> GroupState:
        if name not in self.groups:
            self.groups[name] = GroupState(name)
            bad = sorted(set(_INVALID_GROUP_CHARS.findall(name)))
            if bad:
                at = f"{where.file}:{where.line}: " if where and where.line else (f"{where.file}: " if where else "")
                self.warnings.append(
                    f"{at}group name {name!r} has characters Ansible does not allow in group names "
                    f"({''.join(bad)!r}); Ansible keeps it and warns, and so does deployer"
                )
        return self.groups[name]

    def add_host(self, name: str, where: Where, group: str | None = None, port: int | None = None) -> HostState:
        if not name:
            raise where.error("empty host name")
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = HostState(name)
            # Like Ansible, a `host:port` entry sets the port only where the host first appears.
            if port:
                self.set_host_var(name, "ansible_port", int(port), where)
        if group is not None and name not in self.groups[group].hosts:
            self.groups[group].hosts.append(name)
            host.groups.append(group)
        return host

    def add_child(self, parent: str, child: str, where: Where) -> None:
        """Make `child` a subgroup of `parent`; InventoryError on a cycle."""
        if child == parent:
            raise where.error(f"group {child!r} cannot be a child of itself")
        pg, cg = self.groups[parent], self.groups[child]
        if child in pg.children:
            return
        if child in self.ancestors(parent):
            chain = " -> ".join(self._path(child, parent) + [child])
            raise where.error(
                f"adding group {child!r} as a child of {parent!r} creates a cycle: {chain}",
                hint="a group cannot (indirectly) contain itself; remove one of the children entries",
            )
        pg.children.append(child)
        if parent not in cg.parents:
            cg.parents.append(parent)

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.groups[name].parents)
        while todo:
            g = todo.pop()
            if g not in seen:
                seen.add(g)
                todo.extend(self.groups[g].parents)
        return seen

    def _path(self, start: str, goal: str) -> list[str]:
        """A children-path start -> ... -> goal (exists when goal descends from start)."""
        prev: dict[str, str] = {}
        todo = [start]
        while todo:
            g = todo.pop(0)
            if g == goal:
                break
            for c in self.groups[g].children:
                if c not in prev and c != start:
                    prev[c] = g
                    todo.append(c)
        path = [goal]
        while path[-1] != start and path[-1] in prev:
            path.append(prev[path[-1]])
        return list(reversed(path))

    def set_group_var(self, group: str, key: str, value: Any, where: Where) -> None:
        g = self.groups[group]
        if key == "ansible_group_priority":
            # Ansible consumes this var: it orders same-depth groups and is not itself a var.
            try:
                g.priority = int(value)
            except (TypeError, ValueError):
                raise where.error(f"ansible_group_priority must be an integer, got {value!r}") from None
            return
        g.vars[key] = value
        g.origins[key] = where.label

    def set_host_var(self, host: str, key: str, value: Any, where: Where) -> None:
        h = self.hosts[host]
        h.vars[key] = value
        h.origins[key] = where.label

    def finish(self) -> None:
        """Apply Ansible's reconcile rules: orphan groups under `all`, groupless hosts in `ungrouped`."""
        root = Where("", "")
        for name, g in list(self.groups.items()):
            if name != ALL and not g.parents:
                self.add_child(ALL, name, root)
        ung = self.groups[UNGROUPED]
        for name, h in self.hosts.items():
            real = [g for g in h.groups if g not in (ALL, UNGROUPED)]
            if real and UNGROUPED in h.groups:
                h.groups.remove(UNGROUPED)
                ung.hosts.remove(name)
            elif not real and UNGROUPED not in h.groups:
                ung.hosts.append(name)
                h.groups.append(UNGROUPED)

    def depths(self) -> dict[str, int]:
        """Longest children-path from `all` to each group (Ansible's group depth)."""
        memo: dict[str, int] = {ALL: 0}

        def depth(name: str) -> int:
            if name not in memo:
                parents = self.groups[name].parents
                memo[name] = max((depth(p) + 1 for p in parents), default=0)
            return memo[name]

        return {name: depth(name) for name in self.groups}
