"""The loaded inventory: hosts with merged vars, groups, and host-pattern selection."""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deployer.errors import InventoryError
from deployer.inventory.host import Host


@dataclass(frozen=True)
class Group:
    """One group: its own vars, direct hosts and children, and its place in the tree."""

    name: str
    vars: Mapping[str, Any] = field(default_factory=dict)
    hosts: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()
    depth: int = 0
    priority: int = 1


@dataclass(frozen=True)
class Inventory:
    """Hosts (in the order the inventory lists them) and groups, loaded from `source`."""

    source: str
    hosts: dict[str, Host]
    groups: dict[str, Group]
    warnings: tuple[str, ...] = ()

    def host(self, name: str) -> Host:
        """The host called `name`; InventoryError naming the closest names otherwise."""
        try:
            return self.hosts[name]
        except KeyError:
            raise InventoryError(
                f"no host named {name!r} in {self.source}",
                hint=self.suggest(name) or "see `deploy inventory list`",
            ) from None

    def group_hosts(self, name: str) -> list[Host]:
        """Hosts of a group and of all its descendants, in inventory order."""
        wanted: set[str] = set()
        todo, seen = [name], set()
        while todo:
            g = todo.pop()
            if g in seen or g not in self.groups:
                continue
            seen.add(g)
            wanted.update(self.groups[g].hosts)
            todo.extend(self.groups[g].children)
        if name == "all":
            return list(self.hosts.values())
        return [h for n, h in self.hosts.items() if n in wanted]

    def select(self, pattern: str) -> list[Host]:
        """Hosts matching an Ansible host pattern; InventoryError when none match."""
        from deployer.inventory.patterns import select

        return select(self, pattern)

    def suggest(self, word: str) -> str | None:
        """'did you mean ...' text with the closest host and group names, or None."""
        word = word.lstrip("!&~")
        hosts = difflib.get_close_matches(word, list(self.hosts), n=3, cutoff=0.5)
        groups = difflib.get_close_matches(
            word, [g for g in self.groups if g not in ("all", "ungrouped")], n=3, cutoff=0.5
        )
        parts = []
        if hosts:
            parts.append("hosts " + ", ".join(hosts))
        if groups:
            parts.append("groups " + ", ".join(groups))
        return f"did you mean {' or '.join(parts)}?" if parts else None
