"""Ansible host patterns: names, groups, globs, `~regex`, `a:b`/`a,b`, `a:&b`, `a:!b`, `g[0]`, `g[1:3]`.

Evaluation follows Ansible: plain parts are unioned first, then `&` parts intersect, then
`!` parts exclude, whatever order they were written in. Unlike Ansible, a plain part that
matches nothing is an error (a typo must not silently shrink a deploy).
"""
from __future__ import annotations

import fnmatch
import re
from typing import TYPE_CHECKING

from deployer.errors import InventoryError
from deployer.inventory.hostnames import parse_address

if TYPE_CHECKING:
    from deployer.inventory.host import Host
    from deployer.inventory.model import Inventory

_SUBSCRIPT = re.compile(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$")
_COLON_PARTS = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
_SPECIAL = (".", "?", "*", "[")


def split(pattern: str) -> list[str]:
    """'a,b[1], c[2:3]' -> ['a', 'b[1]', 'c[2:3]']; 'gpus:!gpu03' -> ['gpus', '!gpu03']."""
    if "," in pattern:
        parts = pattern.split(",")
    elif parse_address(pattern) is not None:
        # One host or range (which may itself contain ':'), e.g. 'gpu[01:04]' or an IPv6 address.
        parts = [pattern]
    else:
        parts = _COLON_PARTS.findall(pattern)
    return [p.strip() for p in parts if p.strip()]


def ordered(parts: list[str]) -> list[str]:
    """Plain parts first, then `&` parts, then `!` parts; only modifiers means 'all' first."""
    plain = [p for p in parts if p[0] not in "&!"]
    inter = [p for p in parts if p[0] == "&"]
    excl = [p for p in parts if p[0] == "!"]
    return (plain or ["all"]) + inter + excl


def select(inventory: Inventory, pattern: str) -> list[Host]:
    """Hosts matching `pattern`, in pattern then inventory order; InventoryError if none or a typo."""
    parts = split(pattern or "")
    if not parts:
        raise InventoryError("empty host pattern", hint="use a host or group name, or 'all'")
    hosts: list[Host] = []
    for part in ordered(parts):
        if part in inventory.hosts:
            found = [inventory.hosts[part]]
        else:
            found = match_one(inventory, part)
        if part[0] == "!":
            drop = {h.name for h in found}
            hosts = [h for h in hosts if h.name not in drop]
        elif part[0] == "&":
            keep = {h.name for h in found}
            hosts = [h for h in hosts if h.name in keep]
        else:
            if not found:
                raise InventoryError(
                    f"host pattern {pattern!r}: {part!r} matches no host or group in {inventory.source}",
                    hint=inventory.suggest(part) or "see `deploy inventory list`",
                )
            have = {h.name for h in hosts}
            hosts.extend(h for h in found if h.name not in have)
    if not hosts:
        raise InventoryError(
            f"host pattern {pattern!r} selects no hosts: its '&' / '!' parts removed every match",
            hint="check the intersection and exclusion parts with `deploy inventory list PATTERN`",
        )
    return hosts


def match_one(inventory: Inventory, part: str) -> list[Host]:
    """Hosts for one pattern part (its &/! prefix ignored), subscript applied."""
    if part[0] in "&!":
        part = part[1:]
    if not part:
        raise InventoryError("empty part in host pattern", hint="remove the stray ':', ',' , '&' or '!'")
    expr, subscript = _split_subscript(part)
    hosts = _enumerate(inventory, expr)
    if not subscript or not hosts:
        return hosts
    start, end = subscript
    try:
        if end:
            return hosts[start : (len(hosts) - 1 if end == -1 else end) + 1]
        return [hosts[start]]
    except IndexError:
        raise InventoryError(
            f"host pattern {part!r}: index {start} is out of range ({expr!r} has {len(hosts)} hosts)",
            hint="subscripts count from 0: g[0] is the first host, g[0:2] the first three",
        ) from None


def _split_subscript(part: str) -> tuple[str, tuple[int, int | None] | None]:
    if part[0] == "~":
        return part, None
    m = _SUBSCRIPT.match(part)
    if not m:
        return part, None
    expr, idx, start, _sep, end = m.groups()
    if idx:
        return expr, (int(idx), None)
    return expr, (int(start), int(end) if end else -1)


def _compile(expr: str) -> re.Pattern[str]:
    try:
        return re.compile(expr[1:] if expr[0] == "~" else fnmatch.translate(expr))
    except re.error as exc:
        raise InventoryError(f"invalid host pattern {expr!r}: {exc}") from exc


def _enumerate(inventory: Inventory, expr: str) -> list[Host]:
    regex = _compile(expr)
    groups = [g for g in inventory.groups if regex.match(g)]
    found: dict[str, Host] = {}
    for g in groups:
        for h in inventory.group_hosts(g):
            found.setdefault(h.name, h)
    if not groups or expr[0] == "~" or any(c in expr for c in _SPECIAL):
        for name, h in inventory.hosts.items():
            if regex.match(name):
                found.setdefault(name, h)
    return list(found.values())
