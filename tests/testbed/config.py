"""What the testbed consists of: hosts, addresses, GPUs and where its state lives."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Docker = Literal["28", "20.10"]
Store = Literal["containerd", "overlay2"]

REPO = Path(__file__).resolve().parents[2]
SUBNET = "10.213.0"
PREFIX = 24
UPLINK_ADDR = f"{SUBNET}.1"
UPLINK_DEV = "dtb-uplink"          # root-namespace end of the uplink veth (benchmarks read its counters)
UPLINK_PEER = "uplink"             # site-namespace end, enslaved to the bridge
SITE_NS = "dtb-site"
SITE_BRIDGE = "br0"
REGISTRY_NS = "dtb-registry"
REGISTRY_ADDR = f"{SUBNET}.5"
REGISTRY_PORT = 5000
REGISTRY = f"{REGISTRY_ADDR}:{REGISTRY_PORT}"
# A second registry in the same namespace that wants a login (htpasswd, basic auth): fixed test
# credentials, also written to <state>/registry-auth/credentials.json (mode 0600).
REGISTRY_AUTH_PORT = 5001
REGISTRY_AUTH = f"{REGISTRY_ADDR}:{REGISTRY_AUTH_PORT}"
REGISTRY_AUTH_USER = "deployer-test"
REGISTRY_AUTH_PASSWORD = "dtb-regauth-Pw-7c1f9e40"
WS_BRIDGE = "dtb-ws0"              # bridge for workstation build containers (no NAT, no iptables)
WS_BRIDGE_CIDR = "10.213.1.1/24"
DRIVER_VERSION = "550.54.15"
BASE_IMAGE = "deployer-testbed/busybox:latest"
SAMPLE_IMAGE = "deployer-testbed/sample:latest"
STORES: tuple[Store, ...] = ("overlay2", "containerd")
WS_STORE_ENV = "DEPLOYER_TESTBED_WS_STORE"  # the workstation daemon's image store (default overlay2)


def ws_store_from_env() -> Store:
    """The ws image store DEPLOYER_TESTBED_WS_STORE names (default overlay2); ValueError if unknown."""
    value = os.environ.get(WS_STORE_ENV, "") or "overlay2"
    for store in STORES:
        if value == store:
            return store
    raise ValueError(f"{WS_STORE_ENV}={value!r}: the ws store is one of {', '.join(STORES)}")


@dataclass(frozen=True)
class GpuModel:
    name: str
    memory_mib: int
    count: int


@dataclass(frozen=True)
class HostSpec:
    name: str
    address: str
    gpu: GpuModel | None = None
    airgapped: bool = False
    groups: tuple[str, ...] = field(default_factory=tuple)
    docker: Docker = "28"          # "28": Debian unstable's, fetched into the cache; "20.10": bookworm's
    store: Store = "overlay2"      # image store: classic overlay2, or containerd's (snapshotter overlayfs)
    rekey_limit: str | None = None  # sshd's RekeyLimit: a hardened server re-keys often, even mid-ship


# Today's Docker on both image stores, plus one old (20.10) daemon: the lanes shipping must handle.
HOSTS: tuple[HostSpec, ...] = (
    HostSpec("gpu01", f"{SUBNET}.11", GpuModel("NVIDIA H100 80GB HBM3", 81559, 2), groups=("gpus", "connected"),
             docker="28", store="containerd"),
    HostSpec("gpu02", f"{SUBNET}.12", GpuModel("NVIDIA A100-SXM4-40GB", 40960, 4), groups=("gpus", "connected"),
             docker="28", store="overlay2"),
    HostSpec("airgap01", f"{SUBNET}.13", GpuModel("NVIDIA A10", 23028, 2), airgapped=True,
             groups=("gpus", "airgapped", "site"), docker="28", store="containerd"),
    # cpu01's sshd re-keys every 8 MB (default OpenSSH: every 64 GiB), so ships, runs and logs cross
    # server-started key re-exchanges as long transfers do on any fleet.
    HostSpec("cpu01", f"{SUBNET}.14", None, groups=("connected", "cpu"), docker="20.10", store="overlay2",
             rekey_limit="8M"),
    # with airgap01, an air-gapped site of three behind the one uplink: for shipping through a relay
    HostSpec("airgap02", f"{SUBNET}.15", GpuModel("NVIDIA A10", 23028, 2), airgapped=True,
             groups=("site",), docker="28", store="overlay2"),
    HostSpec("airgap03", f"{SUBNET}.16", GpuModel("NVIDIA A10", 23028, 2), airgapped=True,
             groups=("site",), docker="28", store="containerd"),
)
HOST_NAMES = tuple(h.name for h in HOSTS)


def host_spec(name: str) -> HostSpec:
    """The spec of host `name`; ValueError names the valid hosts."""
    for spec in HOSTS:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown testbed host {name!r}; hosts are {', '.join(HOST_NAMES)}")


def gpu_uuid(host: str, index: int) -> str:
    """A stable, host-specific fake GPU UUID in NVIDIA's format."""
    import hashlib
    h = hashlib.sha256(f"deployer-testbed:{host}:{index}".encode()).hexdigest()
    return f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def gpu_table(spec: HostSpec) -> list[dict[str, object]]:
    """The GPUs of a host as the fake nvidia tools and the pytest fixture see them."""
    if spec.gpu is None:
        return []
    return [{"index": i, "name": spec.gpu.name, "uuid": gpu_uuid(spec.name, i), "memory": spec.gpu.memory_mib}
            for i in range(spec.gpu.count)]


class Paths:
    """Every file location of one testbed instance, under the state dir."""

    def __init__(self, state: Path | None = None) -> None:
        self.state = Path(state or os.environ.get("DEPLOYER_TESTBED_DIR", "/tmp/deployer-testbed"))
        self.key = self.state / "id_ed25519"
        self.known_hosts = self.state / "known_hosts"
        self.authorized_keys = self.state / "authorized_keys"
        self.cache = self.state / "cache"
        self.docker28 = self.cache / "docker28"   # Docker 28 + containerd 2 extracted from their .debs
        self.buildx = self.cache / "buildx"       # the docker-buildx CLI plugin extracted from its .deb
        self.logs = self.state / "logs"
        self.registry = self.state / "registry"
        self.registry_auth = self.state / "registry-auth"
        self.ws = self.state / "ws"
        self.ws_docker_config = self.ws / "docker-config"  # the workstation's DOCKER_CONFIG: cli-plugins/docker-buildx
        self.inventory = REPO / "inventories" / "testbed.yml"

    def host(self, name: str) -> Path:
        return self.state / "hosts" / name

    def docker_sock(self, name: str) -> Path:
        """Docker socket of a host, or of the workstation daemon for name 'ws'."""
        return (self.ws if name == "ws" else self.host(name)) / "docker.sock"

    def docker_config(self, name: str) -> Path:
        """A host's Docker client config dir (its own `docker login`; hosts share one filesystem)."""
        return self.host(name) / "docker-config"

    def docker_host(self, name: str) -> str:
        return f"unix://{self.docker_sock(name)}"

    def ws_data_root(self, store: Store) -> Path:
        """One data root per store, so switching the ws store back and forth keeps each one's images."""
        return self.ws / ("docker" if store == "overlay2" else "docker-containerd")

    def pidfile(self, component: str) -> Path:
        return self.state / "pids" / f"{component}.pid"

