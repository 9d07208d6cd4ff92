"""`group_vars/` and `host_vars/` beside an inventory, found and read the way Ansible does.

For a name, the first of `NAME` (file or directory), `NAME.yml`, `NAME.yaml`, `NAME.json`
wins; a directory contributes its files (recursively, sorted, hidden and `~` files skipped).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from deployer.errors import InventoryError
from deployer.inventory import yamlload
from deployer.inventory.values import var_name

EXTENSIONS = (".yml", ".yaml", ".json")


@dataclass(frozen=True)
class VarsFile:
    """One vars file: its label relative to the inventory base dir, and its mapping."""

    label: str
    vars: dict[str, Any]
    warnings: tuple[str, ...] = ()


def find(base: str, subdir: str, name: str) -> list[str]:
    """Paths of the vars files for one group or host, in the order they are merged."""
    if name.startswith(os.sep):
        return []
    root = os.path.join(base, subdir)
    if not os.path.isdir(root):
        return []
    for ext in ("",) + EXTENSIONS:
        path = os.path.join(root, name + ext)
        if os.path.isdir(path):
            return _dir_files(path)
        if os.path.exists(path):
            return [path]
    return []


def _dir_files(path: str) -> list[str]:
    found: list[str] = []
    for entry in sorted(os.listdir(path)):
        if entry.startswith(".") or entry.endswith("~"):
            continue
        full = os.path.join(path, entry)
        ext = os.path.splitext(entry)[1]
        if os.path.isdir(full) and not ext:
            found.extend(_dir_files(full))
        elif os.path.isfile(full) and (not ext or ext in EXTENSIONS):
            found.append(full)
    return found


def read(path: str, base: str) -> VarsFile:
    """Load one vars file; an empty file is no vars, anything but a mapping is an InventoryError."""
    label = os.path.relpath(path, base)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise InventoryError(f"cannot read vars file: {exc.strerror or exc}", file=path) from exc
    doc = yamlload.load(yamlload.decode(raw, path), path)
    data = doc.data
    if not data:
        return VarsFile(label, {}, tuple(doc.warnings))
    if not isinstance(data, dict):
        raise InventoryError(
            f"a vars file must be a mapping of variable names to values, got {type(data).__name__}", file=path, line=1
        )
    return VarsFile(label, {var_name(k): v for k, v in data.items()}, tuple(doc.warnings))


def load(base: str, subdir: str, name: str) -> list[VarsFile]:
    """Every vars file for one group (subdir='group_vars') or host (subdir='host_vars')."""
    return [read(p, base) for p in find(base, subdir, name)]
