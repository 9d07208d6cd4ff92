"""The object the pytest `testbed` fixture hands to tests: paths, per-host facts and fault controls."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import bed, docker28, net
from .config import (
    HOSTS,
    REGISTRY,
    REGISTRY_AUTH,
    UPLINK_DEV,
    WS_STORE_ENV,
    Paths,
    Store,
    gpu_table,
    ws_store_from_env,
)
from .sh import run


@dataclass(frozen=True)
class TbHost:
    """One simulated server as tests see it."""
    name: str
    address: str
    docker_host: str
    gpus: list[dict[str, Any]] = field(default_factory=list)   # [{index, name, uuid, memory}] (MiB)
    staging_dir: str = ""
    data_root: str = ""
    netns: str = ""
    airgapped: bool = False
    docker: str = "28"          # Docker version line: "28" or "20.10"
    store: str = "overlay2"     # image store: "overlay2" or "containerd"


class Testbed:
    """A running testbed: what tests connect to, and the faults they may inject (always undo them)."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, paths: Paths | None = None, ws_store: Store = "overlay2") -> None:
        self.paths = p = paths or Paths()
        self.ws_store: Store = ws_store  # the workstation daemon's image store (Docker 28 either way)
        self.state = str(p.state)
        self.inventory = str(p.inventory)
        self.key = str(p.key)
        self.known_hosts = str(p.known_hosts)
        self.registry = REGISTRY
        self.registry_auth = REGISTRY_AUTH  # same registry software, but it wants a login
        self.ws_docker_host = p.docker_host("ws")
        self.hosts = {h.name: TbHost(h.name, h.address, p.docker_host(h.name), gpu_table(h),
                                     str(p.host(h.name) / "staging"), str(p.host(h.name) / "data"), h.name,
                                     h.airgapped, h.docker, h.store)
                      for h in HOSTS}

    def hosts_on(self, store: str | None = None, docker: str | None = None) -> list[str]:
        """Names of the hosts on that image store and/or Docker version line, e.g. hosts_on(store="containerd")."""
        return [n for n, h in self.hosts.items()
                if (store is None or h.store == store) and (docker is None or h.docker == docker)]

    # -- faults --------------------------------------------------------------------------------
    def cut(self, name: str) -> None:
        """Make host unreachable: packets silently vanish (TCP hangs, no resets)."""
        net.cut(self.hosts[name].name)

    def heal(self, name: str) -> None:
        net.heal(self.hosts[name].name)

    def throttle(self, target: str, rate: str | None) -> None:
        """Rate-limit 'uplink' or a host in both directions (e.g. '20mbit'); None removes the limit."""
        net.throttle(target if target == "uplink" else self.hosts[target].name, rate)

    def flaky(self, name: str, mb: float | None) -> None:
        """Reset every SSH connection to host after `mb` megabytes; None removes the rule."""
        net.flaky(self.hosts[name].name, mb)

    @contextmanager
    def stalled(self, component: str = "registry") -> Iterator[None]:
        """The registry (or another daemon of the testbed: `registry-auth`, `dockerd-gpu02`) stops
        answering while inside, as a hung server does: connections stay open, nothing comes."""
        pid = bed.alive(self.paths, component)
        assert pid is not None, f"the testbed's {component} is not running"
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def off(self) -> None:
        """Remove every fault (heal, unthrottle, unflake all)."""
        for name in self.hosts:
            self.heal(name)
            self.throttle(name, None)
            self.flaky(name, None)
        self.throttle("uplink", None)

    # -- observation and access ---------------------------------------------------------------
    def uplink_bytes(self) -> tuple[int, int]:
        """(tx, rx) byte counters of the root side of the uplink: tx = workstation -> fleet."""
        stats = Path(f"/sys/class/net/{UPLINK_DEV}/statistics")
        return int((stats / "tx_bytes").read_text()), int((stats / "rx_bytes").read_text())

    def docker(self, name: str, timeout: int = 120) -> Any:
        """docker.DockerClient for a host's daemon, or the workstation's for 'ws'."""
        import docker  # the SDK lives in the project venv, not needed by scripts/testbed

        url = self.ws_docker_host if name == "ws" else self.hosts[name].docker_host
        return docker.DockerClient(base_url=url, timeout=timeout)

    def registry_login(self) -> tuple[str, str]:
        """(user, password) of registry_auth, as `up` wrote them to the state dir."""
        creds = json.loads((self.paths.registry_auth / "credentials.json").read_text())
        return str(creds["username"]), str(creds["password"])

    def docker_config(self, name: str) -> Path:
        """A host's Docker client config dir: where its `docker login` lives (DOCKER_CONFIG over SSH)."""
        return self.paths.docker_config(self.hosts[name].name)

    def ssh_argv(self, name: str, *command: str) -> list[str]:
        """System ssh argv to a host with strict host-key checking against the testbed's known_hosts."""
        return ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o",
                f"UserKnownHostsFile={self.known_hosts}", "-o", "ConnectTimeout=5", "-i", self.key,
                f"root@{self.hosts[name].address}", *command]

    def ssh(self, name: str, command: str, timeout: float = 30, input: bytes | None = None
            ) -> subprocess.CompletedProcess[bytes]:
        """Run a shell command on host over real SSH; returns the completed process (not checked)."""
        return subprocess.run(self.ssh_argv(name, command), check=False, capture_output=True, timeout=timeout, input=input)

    @contextmanager
    def tmpfs(self, path: str | os.PathLike[str], size: str | int = "1m") -> Iterator[Path]:
        """Mount a small tmpfs at path (created if needed) for disk-full tests; unmounted afterwards."""
        target = Path(path)
        target.mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "deployer-testbed-tmpfs", str(target)])
        try:
            yield target
        finally:
            if run(["umount", str(target)], check=False).returncode != 0:
                run(["umount", "-l", str(target)], check=False)

    def env(self) -> dict[str, str]:
        """os.environ plus DOCKER_HOST (workstation daemon), DEPLOY_INVENTORY and the ws store, and
        XDG_CACHE_HOME in the testbed's own state: what deploy remembers of the testbed's hosts
        (their probes, images, pulls) lives and goes with this testbed, apart from the user's."""
        return {**os.environ, "DOCKER_HOST": self.ws_docker_host, "DEPLOY_INVENTORY": self.inventory,
                "DEPLOYER_TESTBED_DIR": self.state, WS_STORE_ENV: self.ws_store,
                "DOCKER_CONFIG": str(self.paths.ws_docker_config),  # holds the buildx CLI plugin
                "XDG_CACHE_HOME": str(self.paths.state / "ws" / "xdg-cache")}


def is_up(paths: Paths) -> bool:
    return all(ok for _, ok, _ in bed.status(paths))


def anything_running(paths: Paths) -> bool:
    return any(net.ns_exists(ns) for ns in net.NAMESPACES) or any(
        bed.alive(paths, c) for c in bed.components())


def start_or_reuse(paths: Paths | None = None, ws_store: Store | None = None) -> tuple[Testbed, bool]:
    """Bring the testbed up (repairing a partial one, or switching the ws daemon to ws_store, default
    DEPLOYER_TESTBED_WS_STORE else overlay2); returns it and whether we started it from nothing."""
    paths = paths or Paths()
    store = ws_store or ws_store_from_env()
    started = not anything_running(paths)
    if started or not is_up(paths) or bed.ws_store(paths) != store:
        bed.up(paths, ws_store=store)
    elif docker28.buildx_version(paths) is None or not (paths.ws_docker_config / "cli-plugins").is_dir():
        with bed.locked(paths):  # a testbed brought up before the plugin was part of it
            docker28.ensure_buildx(paths, lambda _msg: None)
    return Testbed(paths, store), started
