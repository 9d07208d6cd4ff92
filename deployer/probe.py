"""`deploy bundle --for HOST`: ask the host over SSH what the bundle can leave out and how it will load.

The SSH half of deployer.local.bundle, which stays on the workstation (local/ opens no sessions).
"""
from __future__ import annotations

from deployer.commands.facts import parse_probe, probe_argv
from deployer.commands.layers import parse_present, present_layers_argv
from deployer.inventory.host import Host
from deployer.local.bundle import Target


def probe_target(host: Host, timeout: float = 10.0) -> Target:
    """Ask a host over SSH which layers it has, its Docker version, store and decompressors."""
    from deployer.transport import connect

    with connect(host, timeout=timeout) as session:
        listed = session.run(present_layers_argv(host.docker), timeout=300)
        facts = parse_probe(session.run(probe_argv(host, gpus=False, versions=False), check=False, timeout=120).stdout)
    present = parse_present(listed.stdout)
    warnings: list[str] = []
    return Target(
        host=host.name,
        present=present,
        server_version=facts.docker.server_version if facts.docker else "",
        image_store=facts.image_store,
        decompressors=facts.decompressors,
        warnings=tuple(warnings),
    )
