"""Gather a host's facts over an open session (the I/O half of deployer.commands.facts)."""
from __future__ import annotations

from deployer.commands.facts import DockerFacts, Gpu, HostFacts, parse_probe, probe_argv
from deployer.errors import CommandError
from deployer.inventory.host import Host
from deployer.transport.session import Session

PROBE_TIMEOUT_S = 60.0

__all__ = ["DockerFacts", "Gpu", "HostFacts", "gather"]


def gather(session: Session, host: Host, *, timeout: float = PROBE_TIMEOUT_S) -> HostFacts:
    """Run the one probe command on the host and parse it. CommandError if the probe itself failed."""
    result = session.run(probe_argv(host), check=False, timeout=timeout)
    if result.exited != 0 and "@@deployer " not in result.stdout:
        raise CommandError(host.name, result, what="probing the host failed",
                           hint="does the host have a POSIX sh? run `deploy inventory check -v` for details")
    return parse_probe(result.stdout)
