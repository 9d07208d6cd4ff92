"""The shipping tools under test, as pure command builders: deployer, the four baselines, and the
link's floor (a reference, not a tool: it ships no image)."""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import ADDRESSES, KEY, KNOWN_HOSTS, ONE_HOST, REGISTRY, SITE, ZSTD_LEVEL, relay_inventory

DEPLOYER = "deployer"  # the tarball route, every layer the host lacks over SSH (--origin-pull never)
DEPLOYER_ORIGIN = "deployer+origin"  # the same, with the host pulling the base from its origin registry
DEPLOYER_REGISTRY = "deployer-registry"
DEPLOYER_COLD = "deployer-cold"  # (b): the tarball route with warm start off (DEPLOY_WARM=0), every run cold
DEPLOYER_RELAY = "deployer+relay"  # (c) site lane: through the site's relay, each blob crosses the uplink once
DEPLOYER_ONE = ONE_HOST  # (c) site lane: the same image to one of the site's hosts alone
GZIP = "save|gzip|ssh"
ZSTD = "save|zstd|ssh"
RAW = "save|ssh"
PUSH_PULL = "push+pull"
# (a): OpenSSH carrying as many random bytes as deployer's zstd stream in the run to `cat >/dev/null`,
# no Docker at either end: the least time any tool that sends those bytes over SSH can take, measured
# beside the others (a shaped link never runs at its nominal rate). Not a baseline: it ships nothing.
FLOOR = "ssh-floor"
BASELINES = (GZIP, ZSTD, RAW, PUSH_PULL)
TOOLS = (DEPLOYER_RELAY, DEPLOYER_ONE, DEPLOYER, DEPLOYER_COLD, DEPLOYER_ORIGIN, DEPLOYER_REGISTRY, *BASELINES,
         FLOOR)
DEPLOYERS = (DEPLOYER, DEPLOYER_COLD, DEPLOYER_ORIGIN, DEPLOYER_REGISTRY, DEPLOYER_RELAY, DEPLOYER_ONE)
# Tools that go through the registry: their pushes need fresh repos (see hosts.forget_pushes).
REGISTRY_TOOLS = (DEPLOYER_REGISTRY, PUSH_PULL)


def tools_for(scenario: str, lane: str = "") -> tuple[str, ...]:
    """(d) is (a) over the registry: deployer's registry route against the registry baseline; the
    other baselines of (a) are not repeated, the report compares (d) with them too. (b) has both of
    deployer's routes (the re-ship target is for either). (c)'s air-gapped
    site: through the relay, to one host alone, directly, and the best one-liner (no registry there).
    (a) also measures the link's floor for its bytes."""
    if scenario == "c" and lane == SITE:
        return (DEPLOYER_RELAY, DEPLOYER_ONE, DEPLOYER, ZSTD)
    if scenario == "d":
        return (DEPLOYER_REGISTRY, PUSH_PULL)
    if scenario == "e":  # the origin pull against today's tarball route and the registry (which holds the base)
        return (DEPLOYER_ORIGIN, DEPLOYER, PUSH_PULL)
    if scenario == "b":  # a re-ship against push+pull on both of deployer's routes (and without warm start)
        return (DEPLOYER, DEPLOYER_REGISTRY, DEPLOYER_COLD, *BASELINES)
    if scenario == "a":
        return (DEPLOYER, *BASELINES, FLOOR)
    return (DEPLOYER, *BASELINES)


@dataclass(frozen=True)
class Ship:
    """One timed step: ship `ref` to `hosts`; `pulled_ref` is what the host ends up with."""

    tool: str
    ref: str
    hosts: tuple[str, ...]
    repo: str  # registry repository for registry tools, e.g. bench-20250101t1200-3/ml
    payload: str = ""  # FLOOR: the file of random bytes it sends

    @property
    def pulled_ref(self) -> str:
        """The reference the image has on the hosts afterwards."""
        if self.tool == PUSH_PULL:
            return f"{REGISTRY}/{self.repo}:{self.ref.rsplit(':', 1)[1]}"
        return self.ref


def ssh_argv(host: str, remote: Sequence[str]) -> list[str]:
    """OpenSSH as a user would type it: key, strict host keys, the testbed's known_hosts."""
    return ["ssh", "-i", str(KEY), "-o", "StrictHostKeyChecking=yes", "-o",
            f"UserKnownHostsFile={KNOWN_HOSTS}", "-o", "BatchMode=yes", f"root@{ADDRESSES[host]}",
            shlex.join(remote)]


def _pipeline(tool: str, ref: str, host: str) -> str:
    """The classic one-liner for one host, as a bash pipeline."""
    save = shlex.join(["docker", "save", ref])
    if tool == GZIP:
        return f"{save} | gzip | {shlex.join(ssh_argv(host, ['sh', '-c', 'gunzip | docker load']))}"
    if tool == ZSTD:
        zstd = shlex.join(["zstd", f"-{ZSTD_LEVEL}", "-T0", "-q", "-c"])
        return f"{save} | {zstd} | {shlex.join(ssh_argv(host, ['sh', '-c', 'zstd -dc | docker load']))}"
    if tool == RAW:
        return f"{save} | {shlex.join(ssh_argv(host, ['docker', 'load']))}"
    raise ValueError(f"{tool} is not a pipeline tool")


def _parallel(commands: Sequence[str]) -> str:
    """Run commands at once (as a user's `for h in ...; do ... & done; wait` would), fail if any fails."""
    if len(commands) == 1:
        return commands[0]
    lines = [f"( {cmd} ) & p{i}=$!" for i, cmd in enumerate(commands)]
    waits = " ".join(f"$p{i}" for i in range(len(commands)))
    lines.append(f"rc=0; for p in {waits}; do wait $p || rc=1; done; exit $rc")
    return "\n".join(lines)


def baseline_script(ship: Ship) -> str:
    """The bash script for a baseline (push+pull pushes once and pulls on every host at once), or
    for the floor: its payload to each host's /dev/null."""
    if ship.tool == FLOOR:
        sends = [f"{shlex.join(ssh_argv(h, ['sh', '-c', 'cat >/dev/null']))} < {shlex.quote(ship.payload)}"
                 for h in ship.hosts]
        return f"set -euo pipefail\n{_parallel(sends)}\n"
    if ship.tool == PUSH_PULL:
        target = ship.pulled_ref
        push = f"{shlex.join(['docker', 'tag', ship.ref, target])} && " \
               f"{shlex.join(['docker', 'push', target])} >/dev/null"
        pulls = [shlex.join(ssh_argv(h, ["docker", "pull", "-q", target])) for h in ship.hosts]
        return f"set -euo pipefail\n{push}\n{_parallel(pulls)}\n"
    return "set -euo pipefail\n" + _parallel([_pipeline(ship.tool, ship.ref, h) for h in ship.hosts]) + "\n"


def argv(ship: Ship, deploy: Path, inventory: Path) -> list[str]:
    """The full argv of a timed step."""
    if ship.tool in DEPLOYERS:
        via = "registry" if ship.tool == DEPLOYER_REGISTRY else "tarball"
        if ship.tool == DEPLOYER_RELAY:
            inventory = relay_inventory()
        out = [str(deploy), "-i", str(inventory), "ship", "--host", ",".join(ship.hosts),
               "--image", ship.ref, "--via", via, "--json"]
        if via == "tarball":
            out += ["--level", str(ZSTD_LEVEL)]
        if ship.tool in (DEPLOYER, DEPLOYER_COLD, DEPLOYER_RELAY, DEPLOYER_ONE):  # (e) gave the base a repo digest
            out += ["--origin-pull", "never"]
        if len(ship.hosts) > 1:
            out += ["--parallel", str(len(ship.hosts))]
        return ["env", "DEPLOY_WARM=0", *out] if ship.tool == DEPLOYER_COLD else out
    return ["bash", "-c", baseline_script(ship)]
