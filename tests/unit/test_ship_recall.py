"""A re-ship's light check (deployer.ship.recall): the image state a full check would read, from
what the workstation remembers of the host, fed to the full check's own parsers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployer import layercache
from deployer.chain import chain_ids
from deployer.commands.layers import missing_layers, parse_listing
from deployer.commands.ship import parse_image_state
from deployer.inventory.host import Host
from deployer.ship.recall import light_listing, probe_key, recalled_facts

D = ["sha256:" + c * 64 for c in "abcdef"]
I1, I2, I3 = ("sha256:" + c * 64 for c in "123")  # image ids


def test_a_reship_sends_what_lies_above_the_layers_the_host_is_remembered_to_hold() -> None:
    remembered = {I1: tuple(D[:3]), I2: (D[4], D[5])}  # I2 shares nothing with the image
    listed = light_listing(D[:5], remembered)
    assert listed is not None
    state = parse_image_state(listed)
    # REF names nothing known: neither `already there` nor `tag only`, the install verifies
    assert state is not None and state.ref_id is None and not state.has_id
    listing = parse_listing(listed)
    assert listing.known == {I1} and not listing.complete  # a partial view: not remembered as a listing
    present = listing.present(remembered)
    assert set(chain_ids(D[:3])) <= present
    assert missing_layers(D[:5], present) == (3, 4)


def test_several_remembered_images_add_up() -> None:
    remembered = {I1: tuple(D[:2]), I2: tuple(D[:4]), I3: (D[0], D[5])}
    listed = light_listing(D[:5], remembered)
    assert listed is not None
    assert missing_layers(D[:5], parse_listing(listed).present(remembered)) == (4,)


def test_a_first_ship_and_an_image_that_may_be_there_are_checked_in_full() -> None:
    assert light_listing(D[:3], {}) is None  # nothing remembered
    assert light_listing(D[:3], {I1: (D[4], D[5])}) is None  # nothing shared: a first ship of this image
    assert light_listing(D[:3], {I1: tuple(D[:3])}) is None  # every layer there: maybe the image itself
    assert light_listing(D[:3], {I1: tuple(D[:4])}) is None  # the image is the bottom of a remembered one
    assert light_listing([], {I1: tuple(D[:3])}) is None
    # the same layers under another bottom are other layers (ChainIDs): a first ship too
    assert light_listing([D[1], D[2]], {I1: tuple(D[:3])}) is None


def _probe(version: str, registry: str) -> str:
    """A probe's output as deployer.facts reads it: Docker's version and the registry's answer."""
    info = json.dumps({"ServerVersion": version, "Driver": "overlay2"})
    return (f"\n@@deployer arch\nx86_64\n\n@@rc 0\n\n@@deployer docker_info\n{info}\n\n@@rc 0\n"
            f"\n@@deployer registry\n{registry}\n\n@@rc 0\n")


def test_a_host_that_did_not_reach_its_registry_last_time_gets_a_head_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The export begins while the hosts are checked when some host will take the tarball route:
    by its route, or (an `auto` host with a registry) by its last probe, which did not reach it."""
    from deployer.ship.model import ShipOptions
    from deployer.ship.runner import _some_take_tarball

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def host(name: str, via: str = "auto", registry: str = "reg:5000") -> Host:
        return Host(name, vars={"ansible_host": f"10.0.0.{len(name)}", "deploy_registry": registry,
                                "deploy_via": via})

    auto, air, unknown = host("auto"), host("air"), host("unknown")  # each its own address
    layercache.remember_probe(auto, probe_key(auto), _probe("28.5.2", "curl 0 200"))
    layercache.remember_probe(air, probe_key(air), _probe("28.5.2", "curl 28 curl: (28) timed out 000"))
    assert recalled_facts(air) is not None and recalled_facts(unknown) is None
    options = ShipOptions()
    assert not _some_take_tarball([auto], options) and _some_take_tarball([air], options)
    assert not _some_take_tarball([unknown], options)  # never checked: its check decides
    assert _some_take_tarball([host("t", via="tarball")], options)
    assert _some_take_tarball([host("n", registry="")], options)
    assert not _some_take_tarball([host("r", via="registry")], options)
    assert not _some_take_tarball([air], ShipOptions(via="registry"))
    assert _some_take_tarball([auto], ShipOptions(via="tarball"))
    assert _some_take_tarball([auto, unknown, air], options)  # the three, read together
    assert not _some_take_tarball([auto, unknown], options)
