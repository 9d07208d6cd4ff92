"""Per-invocation state shared by commands: the inventory, verbosity."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deployer.inventory.host import Host
    from deployer.inventory.model import Inventory


@dataclass
class AppContext:
    inventory_path: str | None = None
    verbose: bool = False
    _inventory: Inventory | None = field(default=None, repr=False)

    def inventory(self) -> Inventory:
        """Load the inventory once (InventoryError on bad input)."""
        if self._inventory is None:
            from deployer.inventory import load, resolve_path

            self._inventory = load(resolve_path(self.inventory_path))
        return self._inventory

    def select(self, pattern: str) -> list[Host]:
        """Hosts matching an Ansible host pattern; InventoryError when none match."""
        return self.inventory().select(pattern)

    def relays(self, hosts: list[Host]) -> dict[str, Host]:
        """The inventory hosts the given hosts name as their site relay (deploy_relay)."""
        inventory = self.inventory()
        names = {h.relay for h in hosts if h.relay}
        return {n: inventory.hosts[n] for n in names if n in inventory.hosts}
