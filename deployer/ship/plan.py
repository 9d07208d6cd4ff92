"""The pure planner: from what the host has and what we ship, decide route, layers and bytes.

No I/O here: the runner gathers facts, image state and present layers, then calls make_plan()
and preflight(); `deploy ... --dry-run` renders the same plan with render().
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deployer.codec import CodecChoice, choose_codec
from deployer.commands.layers import Listing, missing_layers
from deployer.commands.ship import ImageState
from deployer.errors import PreflightError, SpecError
from deployer.inventory.host import VIA_CHOICES
from deployer.platforms import goarch_of
from deployer.refs import registry_ref
from deployer.sizes import human_bytes  # the one byte formatter; also imported from here
from deployer.tarfmt import Descriptor, uncompressed_layer

if TYPE_CHECKING:
    from deployer.inventory.host import Host
    from deployer.local.image import ImageInfo
    from deployer.ship.origin import Origin

# docker load unpacks its input under <docker root>/tmp before registering layers, and both
# routes need room for the extracted layers: keep a margin for metadata and filesystem slack.
MARGIN = 64 * 1024 * 1024


@dataclass(frozen=True)
class ShipPlan:
    """What shipping one image to one host will do, before any byte moves."""

    host: str
    ref: str
    image_id: str
    route: str  # "noop" | "tag" | "tarball" | "registry"
    via: str | None  # "tarball" | "registry" | None (nothing to transfer)
    reason: str
    layers_total: int
    missing: tuple[int, ...] = ()
    codec: CodecChoice | None = None
    raw_bytes: int = 0  # upper bound of the missing layers' uncompressed bytes
    staging_need: int = 0
    docker_need: int = 0
    registry_ref: str | None = None
    diff_ids: tuple[str, ...] = ()
    image_store: str = "overlay2"  # the host's: "containerd" gets OCI-layout loads ("oci")
    load_format: str = "legacy"  # "legacy" | "oci" (deployer.commands.load.FORMATS)
    reused: tuple[tuple[str, Descriptor], ...] = ()  # oci: the blob that names each layer not sent
    host_id: str | None = None  # the image's id on the host, when it is already there
    ref_was: str | None = None  # the id REF named on the host when checked (a failed pull or load names it again)
    origin: str | None = None  # the base image (repo@digest) the host pulls from its registry first
    from_origin: tuple[int, ...] = ()  # the layers that pull brings (never sent over SSH)
    relay: str | None = None  # the node of the site's relay tree that passes the blobs on (deploy_relay)
    relay_staging: str | None = None  # that node's staging dir
    relay_feeds: tuple[str, ...] = ()  # the hosts this host passes the blobs on to, if a node of the tree

    @property
    def transfers(self) -> bool:
        return self.route in ("tarball", "registry")


def name_layers(diff_ids: Sequence[str], host_content: Mapping[str, Descriptor],
                known_sizes: Mapping[str, int]) -> dict[str, Descriptor]:
    """The blob an OCI load names each layer the host has by (containerd store): the one deployer
    recorded there, else the uncompressed tar a `docker save` load leaves (its size known here).
    Layers with neither are left out of the result."""
    return {d: host_content.get(d) or uncompressed_layer(d, known_sizes[d])
            for d in diff_ids if d in host_content or d in known_sizes}


def needs_layer_sizes(diff_ids: Sequence[str], host_content: Mapping[str, Descriptor], missing: Sequence[int],
                      via: str) -> bool:
    """Whether a containerd-store host's plan needs the workstation's layer tar sizes (name_layers):
    only for layers the host has no recorded blob of, and not for a registry ship of an image the
    host lacks layers of, MISSING (missing_layers): its pull names no layer, and an image with a
    layer missing is not there to be found by its load's manifest (pure)."""
    if all(d in host_content for d in diff_ids):
        return False
    return not (via == "registry" and missing)


def pulled_ids(image: ImageInfo, listing: Listing, remembered: Mapping[str, Sequence[str]]) -> frozenset[str]:
    """The ids of the images a containerd-store host holds that are this image as a registry gave
    it: the digest of a manifest it was pushed or pulled as (the workstation's RepoDigests: a
    registry ship's pull, or the user's own), and every layer of it. A pull can leave an image
    without the layers it had unpacked before (moby#49784): such an image lists fewer and is not
    one. LISTING is the host's images, REMEMBERED the layers of those it listed as known (pure)."""
    found = set()
    for i in image.registry_ids & listing.ids:
        layers = listing.layers.get(i, remembered.get(i) if i in listing.known else None)
        if layers is not None and tuple(layers) == image.diff_ids:
            found.add(i)
    return frozenset(found)


def layer_bytes_bound(history_sizes: Sequence[int], n_layers: int, missing: int) -> int:
    """Upper bound of the top `missing` layers' sizes from `docker history` sizes (oldest first).

    History entries that made no layer have size 0 and so do empty layers, so the mapping to
    layers is ambiguous only for zero-byte entries: the top `missing` layers hold at most the
    last `missing` non-zero entries. Exact when no layer is empty.
    """
    if missing <= 0 or n_layers <= 0:
        return 0
    nonzero = [s for s in history_sizes if s > 0]
    return sum(nonzero[-missing:]) if nonzero else 0


def choose_route(host: Host, via: str, registry_reachable: bool | None,
                 pulls_incomplete: bool = False) -> tuple[str, str]:
    """(route, reason) for a host that needs the image. PULLS_INCOMPLETE: the host's last pull left
    an incomplete image (moby#49784), so auto sends the layers instead of pulling and then sending."""
    if via not in VIA_CHOICES:
        raise SpecError(f"{host.name}: unknown ship route {via!r}", hint="use one of: auto, registry, tarball")
    if via == "tarball":
        return "tarball", "via tarball"
    if via == "registry":
        if not host.registry:
            raise PreflightError(host.name, "--via registry, but the host has no deploy_registry set",
                                 hint="set deploy_registry in the inventory or use --via tarball")
        if registry_reachable is False:
            raise PreflightError(host.name, f"--via registry, but the host cannot reach {host.registry}",
                                 hint="use --via tarball (or auto) for hosts without a route to the registry")
        return "registry", f"via registry {host.registry}"
    if host.registry and registry_reachable and pulls_incomplete:
        return "tarball", (f"auto: the host's last pull from {host.registry} left an incomplete image "
                           "(moby#49784, Docker 28's containerd store)")
    if host.registry and registry_reachable:
        return "registry", f"auto: host reaches {host.registry}"
    if host.registry:
        why = "cannot reach" if registry_reachable is False else "could not confirm it reaches"
        return "tarball", f"auto: host {why} {host.registry}"
    return "tarball", "auto: no deploy_registry"


def make_plan(
    host: Host,
    image: ImageInfo,
    facts: Any,
    state: ImageState,
    present: frozenset[str],
    history_sizes: Sequence[int],
    via: str,
    force_codec: str | None = None,
    known_sizes: Mapping[str, int] | None = None,
    host_content: Mapping[str, Descriptor] | None = None,
    origin: Origin | None = None,
    pulls_incomplete: bool = False,
) -> ShipPlan:
    """Decide how to get `image` onto `host` (pure). `facts` is a deployer HostFacts.

    For a host on the containerd store: KNOWN_SIZES, layer tar sizes known on the workstation;
    HOST_CONTENT, the blobs the host's content store holds for layers deployer loaded there.
    ORIGIN: the registry image the image is built on, which the host may pull itself (tarball route).
    PULLS_INCOMPLETE: the host's last registry pull left an incomplete image (choose_route)."""
    known_sizes = known_sizes or {}
    host_content = host_content or {}
    n = len(image.diff_ids)
    docker = getattr(facts, "docker", None)
    store = getattr(docker, "image_store", None) or "overlay2"
    base: dict[str, Any] = {"host": host.name, "ref": image.ref, "image_id": image.id,
                            "layers_total": n, "diff_ids": image.diff_ids, "image_store": store,
                            "load_format": "oci" if store == "containerd" else "legacy"}
    if state.has_id:
        if state.ref_id in state.ids:
            return ShipPlan(**base, route="noop", via=None, reason="host already has the image",
                            host_id=state.ref_id)
        return ShipPlan(**base, route="tag", via=None, reason="host has the image id; tag only",
                        host_id=min(state.ids))
    route, reason = choose_route(host, via, getattr(facts, "registry_reachable", None), pulls_incomplete)
    if route == "registry":
        missing = missing_layers(image.diff_ids, present)
        raw = layer_bytes_bound(history_sizes, n, len(missing))
        return ShipPlan(
            **base, route=route, via="registry", reason=reason, missing=missing, raw_bytes=raw,
            # the pull downloads compressed layers to <root>/tmp, then extracts them
            docker_need=2 * raw + MARGIN,
            registry_ref=registry_ref(str(host.registry), image.ref), ref_was=state.ref_id,
        )
    decompressors = frozenset(getattr(facts, "decompressors", ()))
    server_version = getattr(docker, "server_version", "") or ""
    missing = missing_layers(image.diff_ids, present)
    from_origin, why = pulled_from_origin(origin, missing, store, getattr(facts, "origin_reachable", None))
    if from_origin:
        assert origin is not None
        missing = tuple(i for i in missing if i not in from_origin)
        reason += f"; {len(from_origin)} base layer(s) pulled by the host from {origin.registry}"
    elif why:
        reason += f"; {why}"
    reused: tuple[tuple[str, Descriptor], ...] = ()
    if store == "containerd":
        # An OCI-layout load names every layer by a blob: the ones it carries by their digest (the
        # compressed blob as is: Docker on this store reads zstd), the ones it leaves out by the
        # blob the host's content store holds. That is the one deployer recorded when it loaded
        # the layer, else the uncompressed one a `docker save` tar leaves (its tar size known
        # here); a layer with neither is sent again (Docker skips unpacking it).
        codec = CodecChoice("gzip" if force_codec == "gzip" else "zstd", host_decompress=False)
        first = min(missing, default=n)
        named = name_layers(image.diff_ids[:first], host_content, known_sizes)
        if from_origin and origin is not None:  # after the pull, the content store holds the registry's blobs
            named.update(zip(image.diff_ids[:origin.layers], origin.blobs))
        unknown = [i for i in range(first) if image.diff_ids[i] not in named]
        missing = tuple(sorted({*unknown, *missing}))
        reused = tuple((d, named[d]) for d in dict.fromkeys(image.diff_ids[:first]) if d in named)
        if unknown:
            reason += f"; {len(unknown)} layer(s) the host has are sent again (no blob of theirs is known)"
    else:
        codec = pick_codec(host.name, server_version, decompressors, force_codec)
    raw = layer_bytes_bound(history_sizes, n, len(missing))
    # the staged blobs are compressed (<= raw, plus frame overhead); docker load unpacks its input
    # (the layers, decompressed on the way when the host decompresses) to <root>/tmp, then
    # registers them
    return ShipPlan(
        **base, route=route, via="tarball", reason=reason, missing=missing, codec=codec,
        raw_bytes=raw, reused=reused, origin=origin.ref if from_origin and origin else None, ref_was=state.ref_id,
        from_origin=from_origin,
        staging_need=raw + MARGIN if missing else 0,
        docker_need=2 * raw + MARGIN if missing else 0,
    )


def pulled_from_origin(origin: Origin | None, missing: Sequence[int], store: str,
                       reachable: bool | None) -> tuple[tuple[int, ...], str]:
    """The missing layers the host pulls from the base's registry instead of receiving them, and a
    note on why none when the origin could have served some (pure)."""
    if origin is None:
        return (), ""
    covered = tuple(i for i in missing if origin.covers(i))
    if not covered:
        return (), ""
    if reachable is not True:
        return (), f"the host {'cannot reach' if reachable is False else 'was not checked for'} {origin.registry}"
    if not origin.confirmed:
        return (), f"{origin.registry} did not show that it holds {origin.ref}, so the base is sent"
    if origin.unread(store):
        return (), f"the manifest of {origin.ref} could not be read, so the base is sent"
    return covered, ""


def pick_codec(host: str, server_version: str, decompressors: frozenset[str], forced: str | None) -> CodecChoice:
    """The best codec for the host, or the forced one if the host can take it."""
    best = choose_codec(server_version, decompressors)
    if forced is None or forced == best.name:
        return best
    if forced == "gzip":
        return CodecChoice("gzip", host_decompress=False)  # every docker load reads gzip layers
    if forced == "zstd" and "zstd" in decompressors:
        return CodecChoice("zstd", host_decompress=True)
    raise PreflightError(host, f"the host cannot load {forced} layers (Docker {server_version or 'unknown'}, "
                         f"decompressors: {', '.join(sorted(decompressors)) or 'none'})",
                         hint="leave the codec to deployer, or install zstd on the host")


def preflight(plan: ShipPlan, facts: Any, image_arch: str = "") -> None:
    """Refuse before sending: Docker missing, wrong CPU architecture, too little disk."""
    if getattr(facts, "docker", None) is None:
        why = getattr(facts, "docker_error", None) or "docker did not answer"
        raise PreflightError(plan.host, f"Docker is not usable on the host: {why}",
                             hint="install Docker there, or set deploy_docker (e.g. 'sudo docker')")
    if not plan.transfers:
        return
    host_arch = goarch_of(getattr(facts, "arch", "") or "")
    if image_arch and host_arch and image_arch != host_arch:
        raise PreflightError(plan.host, f"{plan.ref} is built for {image_arch}, the host is {host_arch}",
                             hint=f"build for the host's platform (docker build --platform linux/{host_arch})")
    checks = [("the staging dir", plan.staging_need, getattr(facts, "disk_free_bytes", None)),
              ("Docker's root dir", plan.docker_need, getattr(facts, "docker_disk_free_bytes", None))]
    for where, need, free in checks:
        if need and free is not None and free < need:
            raise PreflightError(
                plan.host,
                f"not enough disk at {where}: {human_bytes(free)} free, need {human_bytes(need)} "
                f"for {len(plan.missing)} missing layer(s)",
                hint="free space there (e.g. `docker system prune`), or point deploy_staging_dir "
                "at a bigger filesystem",
            )
