"""Which hosts of a ship form a site (deploy_relay), and the site's tree (deploy_relay_fanout); pure.

A site is the hosts of one ship that name one relay, when there are two or more. Its tree is
breadth-first in host order: the relay feeds the first k hosts, the first of those the next k,
and so on (k: the fan-out), so a blob passes at most log_k(N) LAN hops while it is still arriving.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from deployer.errors import InventoryError
from deployer.inventory.host import RELAY_FALLBACKS, Host


def relay_tree(relay: str, hosts: Sequence[str], fanout: int) -> dict[str, str]:
    """host -> the node that passes it the blobs, breadth-first: RELAY, then HOSTS in their order
    (RELAY left out), each node feeding at most FANOUT of them, so the depth grows as log(N).
    RELAY itself, when among HOSTS, feeds its own staging from its copy and is not in the result."""
    if fanout < 1:
        raise ValueError(f"fan-out {fanout} < 1")
    order = [relay, *dict.fromkeys(h for h in hosts if h != relay)]
    return {order[i]: order[(i - 1) // fanout] for i in range(1, len(order))}


def fanout_of(relay: Host, hosts: Sequence[Host]) -> int:
    """The site's fan-out: the smallest deploy_relay_fanout of its relay and hosts (default 8)."""
    return min(h.relay_fanout for h in (relay, *hosts))


@dataclass(frozen=True)
class Hop:
    """Where one host of a site stands in this ship's tree."""

    relay: Host  # the node that passes it the blobs over the LAN (the site's relay serves itself)
    feeds: tuple[str, ...] = ()  # the hosts it passes the blobs on to, when it is a node itself


def sites_of(hosts: Sequence[Host], relays: Mapping[str, Host]) -> dict[str, str]:
    """host name -> the relay that serves it in this ship: hosts naming one relay (deploy_relay)
    form a site when two or more of them are shipped at once (a lone host goes direct: no faster
    through a relay). InventoryError for a relay the inventory lacks, or a bad fallback rule or fan-out."""
    groups: dict[str, list[str]] = {}
    for host in hosts:
        relay = host.relay
        if relay is None:
            continue
        if relay not in relays:
            raise InventoryError(f"host {host.name}: deploy_relay names {relay!r}, which is not an inventory host",
                                 key_path="deploy_relay")
        if host.relay_fallback not in RELAY_FALLBACKS:
            raise InventoryError(f"host {host.name}: deploy_relay_fallback is {host.relay_fallback!r}; "
                                 f"use one of: {', '.join(RELAY_FALLBACKS)}", key_path="deploy_relay_fallback")
        fanout_of(relays[relay], [host])  # InventoryError for a bad deploy_relay_fanout
        groups.setdefault(relay, []).append(host.name)
    return {name: relay for relay, names in groups.items() if len(names) >= 2 for name in names}


def hops_of(hosts: Sequence[Host], relays: Mapping[str, Host]) -> dict[str, Hop]:
    """host name -> its place in its site's tree, for the hosts of this ship's sites (sites_of)."""
    relay_of = sites_of(hosts, relays)
    by_name = {h.name: h for h in hosts}
    hops: dict[str, Hop] = {}
    for relay in dict.fromkeys(relay_of.values()):
        members = [h for h in hosts if relay_of.get(h.name) == relay]
        parents = relay_tree(relay, [h.name for h in members], fanout_of(relays[relay], members))
        for host in members:
            feeds = tuple(c for c, p in parents.items() if p == host.name)
            parent = parents.get(host.name, relay)
            hops[host.name] = Hop(relays[relay] if parent == relay else by_name[parent], feeds)
    return hops
