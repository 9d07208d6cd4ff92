"""Fetch a host's SSH key without logging in, and decide what `deploy inventory trust` may do with it."""
from __future__ import annotations

from dataclasses import dataclass

import paramiko

from deployer.errors import ConnectError
from deployer.inventory.host import Host
from deployer.transport import hostkeys
from deployer.transport.config import ConnectSpec, load_ssh_config, resolve
from deployer.transport.dial import jump_channel, open_link, tcp_connect


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
    jump_link = None
    try:
        if spec.jump is not None:
            jump_link = open_link(spec.jump, host=host, timeout=timeout, trust_name=host)
            sock: object = jump_channel(jump_link.transport, spec, host=host, via=spec.jump, timeout=timeout)
        else:
            sock = tcp_connect(spec, host=host, timeout=timeout)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = timeout
        transport.handshake_timeout = timeout
        try:
            transport.start_client(timeout=timeout)
            return transport.get_remote_server_key()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(host, f"SSH handshake with {spec.label} failed: {exc or type(exc).__name__}") from exc
        finally:
            transport.close()
    finally:
        if jump_link is not None:
            jump_link.close()


def hops(spec: ConnectSpec) -> list[ConnectSpec]:
    """The connection chain, outermost jump first, the target last."""
    chain = [spec]
    while chain[0].jump is not None:
        chain.insert(0, chain[0].jump)
    return chain


def offer(host: Host, *, spec: ConnectSpec | None = None, timeout: float = 10.0) -> Offer:
    """Fetch the key of `spec` (default: the host itself) and compare it with the known_hosts file."""
    spec = spec or resolve(host, load_ssh_config())
    key = fetch_key(spec, host=host.name, timeout=timeout)
    status = hostkeys.check(hostkeys.read(spec.known_hosts), spec.known_host_names(), key)
    return Offer(host.name, spec, key, status)


def record(o: Offer, *, hashed: bool | None = None, replace: bool = False) -> None:
    """Write the offered key to the host's known_hosts file (hashed like the file, unless told)."""
    if hashed is None:
        hashed = hostkeys.file_is_hashed(o.spec.known_hosts)
    hostkeys.record(o.spec.known_hosts, o.names, o.key, hashed=hashed, replace=replace)
