"""The site network: namespaces, a bridge, one veth per host and the root-namespace uplink."""
from __future__ import annotations

import os
import re
from pathlib import Path

from .config import (
    HOSTS,
    PREFIX,
    REGISTRY_ADDR,
    REGISTRY_NS,
    SITE_BRIDGE,
    SITE_NS,
    UPLINK_ADDR,
    UPLINK_DEV,
    UPLINK_PEER,
    WS_BRIDGE,
    WS_BRIDGE_CIDR,
    HostSpec,
)
from .sh import ok, run

NAMESPACES = (SITE_NS, REGISTRY_NS, *(h.name for h in HOSTS))


def ns_exists(ns: str) -> bool:
    return Path(f"/run/netns/{ns}").exists()


def link_exists(dev: str, ns: str | None = None) -> bool:
    return ok(_ip(ns, "link", "show", "dev", dev))


def _ip(ns: str | None, *args: str) -> list[str]:
    return ["ip", *(["-n", ns] if ns else []), *args]


def site_port(name: str) -> str:
    """Name of the bridge-side veth end for a host or the registry, inside the site namespace."""
    return f"v-{name}"[:15]


def ensure_ns(ns: str) -> None:
    if not ns_exists(ns):
        run(["ip", "netns", "add", ns])
    run(_ip(ns, "link", "set", "lo", "up"))


def ensure_site() -> None:
    """The site namespace with its bridge; the bridge forwards between hosts, registry and uplink."""
    ensure_ns(SITE_NS)
    if not link_exists(SITE_BRIDGE, SITE_NS):
        run(_ip(SITE_NS, "link", "add", SITE_BRIDGE, "type", "bridge"))
    run(_ip(SITE_NS, "link", "set", SITE_BRIDGE, "up"))


def attach(ns: str, address: str) -> None:
    """Give namespace ns an eth0 with `address`, wired to the site bridge."""
    ensure_ns(ns)
    port = site_port(ns)
    if not link_exists("eth0", ns) or not link_exists(port, SITE_NS):
        for dev, where in ((port, SITE_NS), ("eth0", ns)):
            if link_exists(dev, where):
                run(_ip(where, "link", "del", dev))
        run(_ip(SITE_NS, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns))
    run(_ip(SITE_NS, "link", "set", port, "master", SITE_BRIDGE))
    run(_ip(SITE_NS, "link", "set", port, "up"))
    run(_ip(ns, "addr", "replace", f"{address}/{PREFIX}", "dev", "eth0"))
    run(_ip(ns, "link", "set", "eth0", "up"))


def ensure_uplink() -> None:
    """The single veth pair through which the root namespace (CLI, pytest, ws dockerd) reaches the site."""
    if not link_exists(UPLINK_DEV) or not link_exists(UPLINK_PEER, SITE_NS):
        if link_exists(UPLINK_DEV):
            run(_ip(None, "link", "del", UPLINK_DEV))
        run(_ip(None, "link", "add", UPLINK_DEV, "type", "veth", "peer", "name", UPLINK_PEER, "netns", SITE_NS))
    run(_ip(SITE_NS, "link", "set", UPLINK_PEER, "master", SITE_BRIDGE))
    run(_ip(SITE_NS, "link", "set", UPLINK_PEER, "up"))
    run(_ip(None, "addr", "replace", f"{UPLINK_ADDR}/{PREFIX}", "dev", UPLINK_DEV))
    run(_ip(None, "link", "set", UPLINK_DEV, "up"))


def ensure_ws_bridge() -> None:
    """A bridge for workstation build containers: the ws dockerd must not create docker0 or touch iptables."""
    if not link_exists(WS_BRIDGE):
        run(_ip(None, "link", "add", WS_BRIDGE, "type", "bridge"))
    run(_ip(None, "addr", "replace", WS_BRIDGE_CIDR, "dev", WS_BRIDGE))
    run(_ip(None, "link", "set", WS_BRIDGE, "up"))


def ensure_host(spec: HostSpec) -> None:
    attach(spec.name, spec.address)
    if spec.airgapped:
        # No route at all to the registry: connects fail fast with "no route", like a real air gap's firewall.
        run(_ip(spec.name, "route", "replace", "unreachable", f"{REGISTRY_ADDR}/32"))
    # connbytes (flaky) needs per-connection byte accounting in this namespace.
    run(["nsenter", f"--net=/run/netns/{spec.name}", "sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1"],
        check=False)


def ensure_network() -> None:
    ensure_site()
    ensure_uplink()
    ensure_ws_bridge()
    attach(REGISTRY_NS, REGISTRY_ADDR)
    for spec in HOSTS:
        ensure_host(spec)


def teardown_network() -> None:
    """Delete every namespace (their veths go with them), the uplink and the ws bridge."""
    for dev in (UPLINK_DEV, WS_BRIDGE):
        if link_exists(dev):
            run(_ip(None, "link", "del", dev), check=False)
    for ns in NAMESPACES:
        if ns_exists(ns):
            run(["ip", "netns", "del", ns], check=False)
            if os.path.exists(f"/run/netns/{ns}"):
                run(["umount", "-l", f"/run/netns/{ns}"], check=False)
                Path(f"/run/netns/{ns}").unlink(missing_ok=True)
    # `ip netns add` bind-mounts /run/netns onto itself; drop that too once no namespace is left in it.
    run_netns = Path("/run/netns")
    if run_netns.is_dir() and not any(run_netns.iterdir()) and _is_mount(run_netns):
        run(["umount", str(run_netns)], check=False)


def _is_mount(path: Path) -> bool:
    return any(line.split()[1] == str(path) for line in Path("/proc/self/mounts").read_text().splitlines())


# --- faults: cut/heal, throttle, flaky ------------------------------------------------------------

def cut(name: str) -> None:
    """Silently drop all traffic to/from a host: its bridge port goes down, so TCP hangs (no resets)."""
    run(_ip(SITE_NS, "link", "set", site_port(name), "down"))


def heal(name: str) -> None:
    run(_ip(SITE_NS, "link", "set", site_port(name), "up"))


def is_cut(name: str) -> bool:
    out = run(_ip(SITE_NS, "-o", "link", "show", "dev", site_port(name)), check=False).stdout.decode()
    return bool(out) and ",UP" not in out.split(">")[0] and "<UP" not in out.split(">")[0]


_RATE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$", re.IGNORECASE)


def rate_bits(rate: str) -> float:
    """Parse a tc rate such as 20mbit or 500kbit into bits per second (ValueError if malformed)."""
    if not _RATE.match(rate):
        raise ValueError(f"bad rate {rate!r}: use e.g. 20mbit, 500kbit, 1gbit, 2mbps")
    m = re.match(r"^([\d.]+)([a-z]+)$", rate.lower())
    assert m
    num, unit = float(m.group(1)), m.group(2)
    mult = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9}
    return num * mult[unit]


def shaped_devs(target: str) -> list[tuple[str | None, str]]:
    """(namespace, device) pairs whose egress together covers both directions of target."""
    if target == "uplink":
        return [(None, UPLINK_DEV), (SITE_NS, UPLINK_PEER)]
    return [(SITE_NS, site_port(target)), (target, "eth0")]


def throttle(target: str, rate: str | None) -> None:
    """Shape target ('uplink' or a host) with tc tbf in both directions; rate None removes it."""
    for ns, dev in shaped_devs(target):
        if rate is None:
            run(_ip_tc(ns, "qdisc", "del", "dev", dev, "root"), check=False)
            continue
        bits = rate_bits(rate)
        burst = max(int(bits / 8 / 100), 16 * 1024)  # >= one jiffy's worth at HZ=100, else tbf caps below rate
        run(_ip_tc(ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate.lower(),
                   "burst", str(burst), "latency", "100ms"))


def throttled(target: str) -> str | None:
    """The current tbf rate on target, or None."""
    ns, dev = shaped_devs(target)[0]
    out = run(_ip_tc(ns, "qdisc", "show", "dev", dev), check=False).stdout.decode()
    m = re.search(r"tbf .*?rate (\S+)", out)
    return m.group(1) if m else None


def _ip_tc(ns: str | None, *args: str) -> list[str]:
    return ["tc", *(["-n", ns] if ns else []), *args]


FLAKY_COMMENT = "deployer-testbed-flaky"


def flaky(name: str, mb: float | None) -> None:
    """Reset every SSH connection to host `name` once it has carried `mb` megabytes; None removes it."""
    _unflaky(name)
    if mb is None:
        return
    if mb <= 0:
        raise ValueError("flaky needs a positive number of megabytes")
    nbytes = int(mb * 1_000_000)
    run(_ipt(name, "-I", "INPUT", "-p", "tcp", "--dport", "22", "-m", "connbytes", "--connbytes", f"{nbytes}:",
             "--connbytes-dir", "both", "--connbytes-mode", "bytes", "-m", "comment", "--comment", FLAKY_COMMENT,
             "-j", "REJECT", "--reject-with", "tcp-reset"))


def flaky_mb(name: str) -> float | None:
    out = run(_ipt(name, "-S", "INPUT"), check=False).stdout.decode()
    m = re.search(r"--connbytes (\d+)", out) if FLAKY_COMMENT in out else None
    return int(m.group(1)) / 1_000_000 if m else None


def _unflaky(name: str) -> None:
    out = run(_ipt(name, "-S", "INPUT"), check=False).stdout.decode()
    for line in out.splitlines():
        if FLAKY_COMMENT in line and line.startswith("-A "):
            run(_ipt(name, "-D", *_split_rule(line[3:])), check=False)


def _split_rule(rule: str) -> list[str]:
    import shlex
    return shlex.split(rule)


def _ipt(ns: str, *args: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{ns}", "iptables", "-w", *args]

