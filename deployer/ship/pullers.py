"""Whether a ship's registry push may be zstd: only if every host that pulls it reads zstd layers.

Docker 23 and later pull zstd layers; 20.10 cannot (deployer.codec.reads_zstd). The push starts
while the hosts are still being checked (deployer.ship.runner), so the question comes before every
host is planned: a host's Docker version is taken from this ship's check once it is done, else
from the host's last remembered probe (deployer.layercache: a Docker upgrade does not take zstd
away), else the push waits for the host's check. A host whose check failed, or that takes the
tarball route, pulls nothing. A host not checked in time counts as one that cannot.
"""
from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence

from deployer.codec import reads_zstd
from deployer.inventory.host import Host
from deployer.ship.recall import recalled_facts

log = logging.getLogger(__name__)

# How long the push waits for a host's check (a few tenths of a second, usually): a host that hangs
# must not hold up the push every other host waits for; past this it counts as of unknown version.
CHECK_WAIT_S = 5.0


class Pullers:
    """The Docker versions of a ship's hosts, as their checks (or the last ones) tell them."""

    def __init__(self, hosts: Sequence[Host], via: str | None, codec: str | None, parallel: int,
                 wait_s: float = CHECK_WAIT_S) -> None:
        self._hosts = [h for h in hosts if h.registry and (via or h.via) != "tarball"]
        self._soon = {h.name for h in hosts[:max(1, parallel)]}  # checked at once; the others in turn
        self._gzip = codec == "gzip"  # --codec gzip: layers go as gzip on every route
        self._wait_s = wait_s
        self._checked = {h.name: threading.Event() for h in self._hosts}
        self._versions: dict[str, str | None] = {}  # None: pulls nothing (its check failed, or tarball route)

    def checked(self, name: str, version: str | None, registry_route: bool = True) -> None:
        """HOST's check is over: its Docker version (None: the check failed), whether it pulls."""
        if name in self._checked:
            self._versions[name] = version if registry_route else None
            self._checked[name].set()

    def read_zstd(self, registry: str) -> bool:
        """Whether every host that may pull from REGISTRY in this ship reads zstd layers."""
        if self._gzip:
            return False
        for host in (h for h in self._hosts if h.registry == registry):
            version = self._version(host)
            if version is not None and not reads_zstd(version):
                log.info("%s: Docker %s cannot pull zstd layers: the push goes as gzip (docker push)",
                         host.name, version or "of unknown version")
                return False
        return True

    def _version(self, host: Host) -> str | None:
        """HOST's Docker version ('' unknown); None when it pulls nothing in this ship."""
        event = self._checked[host.name]
        if not event.is_set():
            remembered = _remembered_version(host)
            if remembered and reads_zstd(remembered):
                return remembered
            if host.name not in self._soon or not event.wait(self._wait_s):
                return ""
        return self._versions.get(host.name, "")


def _remembered_version(host: Host) -> str:
    """The Docker version of HOST's last remembered probe, of any age ('' if none)."""
    recalled = recalled_facts(host, math.inf)
    docker = recalled[1].docker if recalled is not None else None
    return docker.server_version if docker is not None else ""
