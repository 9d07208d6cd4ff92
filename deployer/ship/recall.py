"""A re-ship's light check: no docker call before the blobs go, when the last ship already said.

A re-ship after a code change finds the host as the previous ship left it: the same Docker, and
the previous image, which holds the new one's lower layers. When the workstation remembers both
(deployer.layercache: the last full check's probe, at most LIGHT_MAX_AGE_S old, and the host's
images that share the new image's bottom layers), the check's round trip only takes the lock,
lists the staging dir and, on the containerd store, reads the content records: the probe
(`docker info`) and the image reads, most of a re-ship's fixed cost, are left out. The plan is
then made from what is remembered, as if the full check had said it: the layers above those the
host's images hold are sent.

What that skips is verified anyway: the install loads the new image on those layers, checks its
id and that it is complete, and tags it (the registry route's pull checks the id it pulled). If
the host is no longer as remembered (the layers gone, another image store, another Docker, a
registry it no longer reaches), that fails, and the ship checks the host in full and carries on
(deployer.ship.runner; the lock is still its own, the blobs staged stay staged).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from deployer import layercache
from deployer.commands.facts import HostFacts, probe_argv
from deployer.commands.layers import Listing, missing_layers
from deployer.errors import DeployError
from deployer.facts import read_probe
from deployer.inventory.host import Host
from deployer.transport.result import Result


@dataclass(frozen=True)
class Recalled:
    """What a light check plans from: the last ship's probe (its output, and the facts read from
    it once) and the image state a full check would have read, as remembered (light_listing)."""

    probe: str
    facts: HostFacts
    listing: str


LIGHT_MAX_AGE_S = 3600.0  # a re-ship loop runs minutes apart; an older probe is taken again


def probe_key(host: Host) -> tuple[str, ...]:
    """What a remembered probe must have asked to stand in for a light check's: the probe without
    GPUs or an origin, for this host's staging dir, registry and docker command (pure)."""
    return probe_argv(host, gpus=False, versions=False)


def recalled_facts(host: Host, max_age_s: float = LIGHT_MAX_AGE_S) -> tuple[str, HostFacts] | None:
    """HOST's last remembered probe, at most MAX_AGE_S old: its output and the facts read from it
    (None: none, or one that does not read). Reads the workstation's deployer.layercache."""
    return recalled_facts_of([host], max_age_s)[0]


def recalled_facts_of(hosts: Sequence[Host], max_age_s: float = LIGHT_MAX_AGE_S) -> list[tuple[str, HostFacts] | None]:
    """recalled_facts of each host, from one read of the cache."""
    probes = layercache.recalled_probes([(h, probe_key(h)) for h in hosts], max_age_s)
    return [_read(h, probe) for h, probe in zip(hosts, probes, strict=True)]


def _read(host: Host, probe: str | None) -> tuple[str, HostFacts] | None:
    if probe is None:
        return None
    try:
        return probe, read_probe(host.name, Result(("the last ship's probe",), 0, probe, host=host.name))
    except DeployError:
        return None


def light_listing(diff_ids: Sequence[str], remembered: Mapping[str, Sequence[str]]) -> str | None:
    """What the full check's image read (deployer.commands.layers) would print for the host as
    remembered: REF naming no image known to hold this one (so neither `already there` nor `tag
    only`), and the remembered images that share the image's bottom layer (pure).

    None when none does (a first ship: checked in full), or when they hold every layer of
    DIFF_IDS (the image may be there already: the full check tells)."""
    if not diff_ids:
        return None
    sharing = {i: layers for i, layers in remembered.items() if layers and layers[0] == diff_ids[0]}
    if not sharing or not missing_layers(diff_ids, Listing(frozenset(sharing), {}).present(sharing)):
        return None
    return "ref \n" + "".join(f"known {i}\n" for i in sorted(sharing)) + "listing skipped\n"
