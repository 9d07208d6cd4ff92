"""Benchmark options and the testbed's fixed facts (addresses, paths, interfaces)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTBED = Path(os.environ.get("DEPLOYER_TESTBED_DIR", "/tmp/deployer-testbed"))
KEY = TESTBED / "id_ed25519"
KNOWN_HOSTS = TESTBED / "known_hosts"
UPLINK_IF = "dtb-uplink"
REGISTRY = "10.213.0.5:5000"
ADDRESSES = {"gpu01": "10.213.0.11", "gpu02": "10.213.0.12", "airgap01": "10.213.0.13", "cpu01": "10.213.0.14",
             "airgap02": "10.213.0.15", "airgap03": "10.213.0.16"}

SCENARIOS = ("a", "b", "c", "d", "e")
SCENARIO_TITLES = {
    "a": "first ship, host has no layers",
    "b": "re-ship after a code-only change",
    "c": "three hosts at once",
    "d": "first ship over the registry route",
    "e": "first ship, base at its origin registry",
}
# (e): the image's base (every layer but the code layer) sits in the testbed's registry, playing
# the public origin the workstation pulled it from; the host lacks it but reaches that registry.
# The single-host scenarios (a), (b), (d) run once per host image store ("lane"), each on a Docker 28
# host that reaches the registry (so every tool can serve it): gpu02 keeps the classic overlay2 store,
# gpu01 the containerd image store. (c) ships to three connected hosts of mixed stores at once
# (containerd, overlay2, and the Docker 20.10 lane), so that the registry baseline serves them all too.
HOST_STORES = ("overlay2", "containerd")
STORE_HOSTS = {"overlay2": "gpu02", "containerd": "gpu01"}
MULTI_HOSTS = ("gpu01", "gpu02", "cpu01")
MIXED = "mixed"  # the host store of (c)
# (c) also runs in a second lane: an air-gapped site of three hosts (both stores) on one LAN behind the
# throttled uplink, shipped through a relay inside the site (deploy_relay: airgap01), directly, and to
# one of them alone (the figure the relay's targets compare with).
SITE = "site"
SITE_HOSTS = ("airgap01", "airgap02", "airgap03")
RELAY = "airgap01"
ONE_HOST = "deployer (1 host)"  # the tool name of the one-host reference in the site lane
WS_STORES = ("overlay2", "containerd")
# The smoke's single-host scenarios run on the containerd host only; (c) still covers gpu02 (overlay2)
# and cpu01 (Docker 20.10), so every kind of host is shipped to and checked.
SMOKE_HOST_STORES = ("containerd",)
SMOKE_SIZE_GB = 0.02
SMOKE_RATE = "400mbit"
# The smoke's throttled pass covers (a) only: enough to exercise throttling within CI's time budget.
SMOKE_THROTTLED_SCENARIOS = ("a",)
ZSTD_LEVEL = 3  # deployer's default level; the zstd baseline uses the same

_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$", re.IGNORECASE)
_RATE_UNITS = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}


def host_dir(host: str) -> Path:
    return TESTBED / "hosts" / host


def docker_socket(host: str) -> str:
    return f"unix://{host_dir(host) / 'docker.sock'}"


def staging_dir(host: str) -> Path:
    return host_dir(host) / "staging"


def inventory() -> Path:
    env = os.environ.get("DEPLOY_INVENTORY")
    return Path(env) if env else ROOT / "inventories" / "testbed.yml"


def rate_bits(rate: str) -> int:
    """'200mbit' -> 200_000_000 (tc's units); ValueError for anything else."""
    m = _RATE.match(rate.strip())
    if not m:
        raise ValueError(f"bad rate {rate!r}: use a tc rate such as 200mbit, 1gbit or 800kbit")
    return int(float(m.group(1)) * _RATE_UNITS[m.group(2).lower()])


def hosts_for(scenario: str, host_store: str, tool: str = "") -> tuple[str, ...]:
    """The hosts a step of this scenario ships to, in this host-store lane (and with this tool)."""
    if host_store == SITE:
        return SITE_HOSTS[:1] if tool == ONE_HOST else SITE_HOSTS
    return MULTI_HOSTS if scenario == "c" else (STORE_HOSTS[host_store],)


def lanes_for(scenario: str, host_stores: tuple[str, ...]) -> tuple[str, ...]:
    """The host-store lanes a scenario runs in: each chosen store, or (c)'s mixed three and its site."""
    return (MIXED, SITE) if scenario == "c" else host_stores


def relay_inventory() -> Path:
    """The testbed inventory with the site's relay set (deploy_relay on group `site`), for deployer+relay."""
    import yaml

    doc = yaml.safe_load(inventory().read_text())
    doc["all"]["children"]["site"]["vars"] = {"deploy_relay": RELAY}
    path = TESTBED / "bench-relay-inventory.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def parse_host_stores(text: str) -> tuple[str, ...]:
    """'containerd,overlay2' -> ('overlay2', 'containerd'); ValueError names the unknown ones."""
    wanted = {s.strip().lower() for s in text.split(",") if s.strip()}
    unknown = sorted(wanted - set(HOST_STORES))
    if unknown or not wanted:
        raise ValueError(f"unknown host store(s) {','.join(unknown) or '(none)'}: choose from {','.join(HOST_STORES)}")
    return tuple(s for s in HOST_STORES if s in wanted)


def parse_scenarios(text: str) -> tuple[str, ...]:
    """'a,c' -> ('a', 'c'), in canonical order; ValueError names the unknown ones."""
    wanted = {s.strip().lower() for s in text.split(",") if s.strip()}
    unknown = sorted(wanted - set(SCENARIOS))
    if unknown or not wanted:
        raise ValueError(f"unknown scenario(s) {','.join(unknown) or '(none)'}: choose from {','.join(SCENARIOS)}")
    return tuple(s for s in SCENARIOS if s in wanted)


@dataclass(frozen=True)
class BenchConfig:
    """What one `scripts/bench` invocation measures."""

    size_gb: float = 1.0
    rate: str = "200mbit"
    reps: int = 3
    scenarios: tuple[str, ...] = SCENARIOS
    host_stores: tuple[str, ...] = HOST_STORES  # lanes of the single-host scenarios
    ws_store: str | None = None  # switch the workstation daemon to this store for the run (None: as is)
    smoke: bool = False
    out: Path = ROOT / "bench-results"
    unthrottled: bool = True
    throttled: bool = True
    tools: tuple[str, ...] = field(default=())  # empty = every tool
    rebuild: bool = False
    worktree: bool = False  # run deployer from the working tree instead of a snapshot of HEAD
    rev: str = "HEAD"  # the commit whose deployer/ is benchmarked (unless worktree)
    throttled_scenarios: tuple[str, ...] = SCENARIOS
    quiet_seconds: float = 1.0  # before each step, wait for this long a window of near-idle uplink

    @property
    def size_bytes(self) -> int:
        return int(self.size_gb * 1024**3)

    def modes(self) -> tuple[str | None, ...]:
        """Uplink rates to run: None = unthrottled."""
        out: list[str | None] = []
        if self.unthrottled:
            out.append(None)
        if self.throttled:
            out.append(self.rate)
        return tuple(out)
