"""Ansible-compatible inventory: YAML/INI files and directories, group_vars/host_vars, host patterns.

    load(path) -> Inventory          parse a file or directory (InventoryError, exit 2, on bad input)
    resolve_path(path_or_None)       -i / $DEPLOY_INVENTORY, else inventories/hosts.{yml,yaml,ini}
    Inventory.select(pattern)        Ansible host patterns -> [Host]
"""
from __future__ import annotations

from deployer.inventory.host import Host
from deployer.inventory.loader import DEFAULT_CANDIDATES, load, resolve_path
from deployer.inventory.model import Group, Inventory

__all__ = ["DEFAULT_CANDIDATES", "Group", "Host", "Inventory", "load", "resolve_path"]
