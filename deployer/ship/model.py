"""The values shipping works with: options in, one result per host out."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deployer.inventory.host import Host


@dataclass(frozen=True)
class ShipOptions:
    """How to ship. `via` None means each host's deploy_via (default auto)."""

    via: str | None = None
    level: int = 3
    parallel: int = 8
    break_lock: bool = False
    lock_wait: float = 0.0
    connect_timeout: float = 10.0
    codec: str | None = None  # force "zstd" or "gzip" for the tarball route (None: best per host)
    origin_pull: str = "auto"  # "never": hosts never pull the base from its registry (deploy_origin_pull per host)
    record: tuple[tuple[str, str], ...] = ()  # extra fields for each host's history record (playbook, git_rev)
    relays: Mapping[str, Host] = field(default_factory=dict)  # the inventory hosts named by deploy_relay
    gpu_facts: bool = False  # probe the GPUs too: a run follows on the same connection (`ship -p`)


@dataclass(frozen=True)
class ShipResult:
    """What shipping did on one host (also attached, partial, to a host's error)."""

    host: str
    via: str | None = None
    route: str | None = None  # noop | tag | tarball | registry
    image_id: str | None = None  # the local id (`docker images` here)
    verified: bool = False
    host_image_id: str | None = None  # the id the host's `docker images` shows (its store's kind of id)
    config_digest: str | None = None  # the same image on any store; what verification compares
    layers_total: int = 0
    layers_sent: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    origin: str | None = None  # the base (repo@digest) the host pulled from its registry, if it did
    layers_from_origin: int = 0  # layers that pull brought instead of SSH
    relay: str | None = None  # the site relay that passed the blobs on, if one did
    relay_bytes: int = 0  # bytes that relay sent the host over the site's LAN (not the workstation's link)
    relay_fallback: bool = False  # its relay could not serve it: it got (the rest of) its blobs directly
    phases: tuple[tuple[str, float], ...] = ()  # seconds per phase (connecting, checking, sending, ...)

    def to_json(self, error: str | None = None, hint: str | None = None) -> dict[str, Any]:
        """The --json record, exactly the documented keys (ERROR and HINT: deployer.errors.error_fields)."""
        return {
            "host": self.host,
            "ok": error is None,
            "error": error,
            "hint": hint,
            "via": self.via,
            "image_id": self.image_id,
            "host_image_id": self.host_image_id,
            "config_digest": self.config_digest,
            "verified": self.verified,
            "layers_total": self.layers_total,
            "layers_sent": self.layers_sent,
            "origin": self.origin,
            "layers_from_origin": self.layers_from_origin,
            "relay": self.relay,
            "relay_bytes": self.relay_bytes,
            "relay_fallback": self.relay_fallback,
            "bytes_sent": self.bytes_sent,
            "seconds": round(self.seconds, 3),
            "phases": {name: round(s, 3) for name, s in self.phases},
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
