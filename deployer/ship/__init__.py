"""Getting a local image onto hosts: registry or layer-aware tarball, resumable and verified.

    ship_image(hosts, ref, options, reporter) -> list[Outcome[ShipResult]]
    plan_ship(hosts, ref, options)            -> list[Outcome[ShipPlan]]   (dry run)
"""
from __future__ import annotations

from deployer.inventory.host import VIA_CHOICES
from deployer.ship.model import ShipOptions, ShipResult
from deployer.ship.plan import ShipPlan
from deployer.ship.runner import plan_ship, ship_image

__all__ = ["VIA_CHOICES", "ShipOptions", "ShipPlan", "ShipResult", "plan_ship", "ship_image"]
