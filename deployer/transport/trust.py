"""Fetch a host's SSH key without logging in, and decide what `deploy inventory trust` may do with it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import paramiko

from deployer.errors import HostKeyError
from deployer.inventory.host import Host
from deployer.transport import hostkeys
from deployer.transport.config import ConnectSpec, load_ssh_config, resolve
from deployer.transport.dial import close_transports, negotiate, reach


@dataclass(frozen=True)
class Offer:
    """The key a host offered, and how it compares with the known_hosts file."""

    host: str
    spec: ConnectSpec
    key: paramiko.PKey
    status: hostkeys.KeyStatus

    @property
    def names(self) -> tuple[str, ...]:
        """The known_hosts names to record (address form first, then the inventory name)."""
        return self.spec.known_host_names()


def fetch_key(spec: ConnectSpec, *, host: str, timeout: float = 10.0) -> paramiko.PKey:
    """The host key the server offers in a plain handshake (no authentication, nothing verified).

    A jump host on the way is connected to normally: its key must already be trusted.
    """
    sock, jumps = reach(spec, host=host, timeout=timeout, trust_name=host)
    try:
        transport = negotiate(sock, spec, host=host, timeout=timeout)
        try:
            return transport.get_remote_server_key()
        finally:
            transport.close()
    finally:
        close_transports(jumps)


def hops(spec: ConnectSpec) -> list[ConnectSpec]:
    """The connection chain, outermost jump first, the target last."""
    chain = [spec]
    while chain[0].jump is not None:
        chain.insert(0, chain[0].jump)
    return chain


def offer(host: Host, *, spec: ConnectSpec | None = None, timeout: float = 10.0) -> Offer:
    """Fetch the key of `spec` (default: the host itself) and compare it with the known_hosts file.
    The host's ansible_ssh_timeout, if set, is its TIMEOUT, as for a login."""
    spec = spec or resolve(host, load_ssh_config())
    key = fetch_key(spec, host=host.name, timeout=host.connect_timeout(timeout))
    status = hostkeys.check(hostkeys.read(spec.known_hosts), spec.known_host_names(), key)
    return Offer(host.name, spec, key, status)


def record(o: Offer, *, hashed: bool | None = None, replace: bool = False) -> None:
    """Write the offered key to the host's known_hosts file (hashed like the file, unless told)."""
    if hashed is None:
        hashed = hostkeys.file_is_hashed(o.spec.known_hosts)
    hostkeys.record(o.spec.known_hosts, o.names, o.key, hashed=hashed, replace=replace)


@dataclass(frozen=True)
class Decision:
    """What `deploy inventory trust` does with one offered key: record it, after asking, or nothing."""

    offer: Offer
    label: str  # "gpu01 (10.0.0.5:22)", "jump host bastion (10.0.0.1:22)"
    message: str  # shown before the question
    question: str | None = None  # None: already trusted, nothing to record
    warning: bool = False  # a changed key: the message is a loud warning

    @property
    def replace(self) -> bool:
        return self.offer.status.state == "changed"


def decide(o: Offer, label: str, *, replace: bool) -> Decision:
    """The decision for one offered key (pure). HostKeyError for a revoked key, and for a changed
    one unless replace: a changed key is never replaced silently."""
    state, where = o.status.state, o.spec.known_hosts
    if state == "trusted":
        return Decision(o, label, f"{label}: already trusted: {hostkeys.describe(o.key)}")
    if state == "revoked":
        raise HostKeyError(o.host, f"{label} offers a key REVOKED in {where}: {hostkeys.describe(o.key)}",
                           state="revoked")
    if state == "changed":
        old = "\n".join(f"    recorded: {hostkeys.describe(e.key)}  ({where}:{e.lineno})" for e in o.status.expected)
        msg = (f"WARNING: HOST KEY OF {label} HAS CHANGED. This can be a man-in-the-middle attack, "
               f"or the host was reinstalled.\n{old}\n    offered:  {hostkeys.describe(o.key)}")
        if not replace:
            raise HostKeyError(o.host, msg + f"\n  {where} was not modified.", state="changed",
                               hint="verify the offered fingerprint on the host's console "
                                    "(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then add --replace")
        return Decision(o, label, msg, f"Replace the recorded key of {label} in {where}?", warning=True)
    return Decision(o, label, f"{label} offers {hostkeys.describe(o.key)}", f"Trust it and record it in {where}?")


def trust_host(host: Host, *, replace: bool, hashed: bool | None, timeout: float,
               confirm: Callable[[Decision], bool], say: Callable[[str], None]) -> bool:
    """Trust every hop to host, outermost jump first (the next key is fetched through it).

    confirm(decision) shows the decision and asks its question; False when the user declined.
    """
    target = resolve(host, load_ssh_config())
    for spec in hops(target):
        what = host.name if spec is target else f"jump host {spec.name or spec.address}"
        o = offer(host, spec=spec, timeout=timeout)
        decision = decide(o, f"{what} ({spec.address}:{spec.port})", replace=replace)
        if decision.question is None:
            say(decision.message)
            continue
        if not confirm(decision):
            return False
        record(o, hashed=hashed, replace=decision.replace)
        say(f"{decision.label}: recorded {o.key.get_name()} key as {', '.join(o.names)} in {spec.known_hosts}")
    return True
