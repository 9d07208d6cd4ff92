"""The line `deploy ship` prints when a host is done."""
from __future__ import annotations

from dataclasses import replace

from deployer.cli.ship import _via
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


def test_a_host_whose_relay_failed_says_it_got_the_rest_directly() -> None:
    """deploy_relay_fallback: direct: the line and the table's route say the relay failed the host,
    whether it had passed it bytes first or not, or was never set up for it."""
    behind = ShipResult("airgap02", via="tarball", route="tarball", verified=True, layers_total=7, layers_sent=7,
                        bytes_sent=4_000_000, seconds=22.0, relay="airgap01", relay_bytes=26_200_000,
                        relay_fallback=True)
    assert _summary(behind) == ("tarball: 7/7 layers, 4.0 MB sent (26.2 MB from the relay airgap01, the rest "
                                "directly), 22.0s, id verified")
    nothing = replace(behind, relay_bytes=0, bytes_sent=30_000_000)
    assert _summary(nothing) == ("tarball: 7/7 layers, 30.0 MB sent (relay airgap01 failed; the rest directly), "
                                    "22.0s, id verified")
    never = replace(nothing, relay=None)
    assert _summary(never) == "tarball: 7/7 layers, 30.0 MB sent (its relay failed; the rest directly), 22.0s, id verified"
    routes = [_via(r.to_json()) for r in (behind, nothing, never, replace(behind, relay_fallback=False),
                                          replace(never, via=None))]
    assert routes == ["tarball (relay airgap01 failed, then direct)", "tarball (relay airgap01 failed, then direct)",
                      "tarball (direct, its relay failed)", "tarball (relay airgap01)", "- (direct, its relay failed)"]
    assert _via(ShipResult("gpu01", via="registry").to_json()) == "registry"
