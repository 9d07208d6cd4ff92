"""The line `deploy ship` prints when a host is done."""
from __future__ import annotations

from dataclasses import replace

from deployer.ship.model import ShipResult
from deployer.ship.runner import _summary


def test_a_hosts_done_line_names_what_its_site_relay_sent_it() -> None:
    """A host behind a site relay cost the uplink a few kB; its blobs came over the LAN, and its
    line says so (the relay's own line does not: it got them over the uplink)."""
    behind = ShipResult(host="airgap02", via="tarball", route="tarball", layers_total=7, layers_sent=7,
                        bytes_sent=19_456, seconds=10.65, relay="airgap01", relay_bytes=302_042_257)
    assert _summary(behind) == ("tarball: 7/7 layers, 19.5 KB sent (302.0 MB from the relay airgap01), 10.7s, "
                                "id verified")
    relay = replace(behind, host="airgap01", bytes_sent=302_071_441)
    assert _summary(relay) == "tarball: 7/7 layers, 302.1 MB sent, 10.7s, id verified"
    assert _summary(replace(behind, relay=None, relay_bytes=0)) == "tarball: 7/7 layers, 19.5 KB sent, 10.7s, id verified"
