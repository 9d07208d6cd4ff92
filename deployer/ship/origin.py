"""Where an image's base came from: hosts that reach that registry pull the base from it, so only
the user's own layers cross the user's uplink (issue 19).

    find_origin(image, client) -> Origin | None

The base is the longest run of the image's bottom layers that the local Docker pulled from a
registry (deployer.local.image.pulled_base), else that deployer's BuildKit build of the image
declared (deployer.local.declared: the registry's manifest and config, read once, give its layers);
either way pinned by the digest of the platform's manifest, never by tag. For a host on the containerd
image store, the OCI load that follows the pull names those layers by the registry's blobs
(what the pull left in the host's content store); they come from the registry's manifest, read
here with the local Docker's credentials. Credentials never go to a host: a host pulls with its own.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import requests

from deployer import layercache
from deployer.errors import LocalError
from deployer.local import declared
from deployer.local.client import Client
from deployer.local.image import ImageInfo, PulledBase, confirmed_base, inspect_attrs, is_containerd, pulled_base
from deployer.ship.registry_api import (
    ManifestReader,
    RegistryAPIError,
    RegistryUnreachable,
    image_manifest,
    platform_manifest,
    split_repo,
)
from deployer.tarfmt import Descriptor

log = logging.getLogger(__name__)
BASE_MAX_AGE_S = 3600.0  # a re-ship loop runs minutes apart; an older answer is looked up again
# Docker's schema 2 layer types, as the OCI manifest of a load names the same blobs
_OCI_TYPE = {"application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
             "application/vnd.docker.image.rootfs.diff.tar.zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
             "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar"}


@dataclass(frozen=True)
class Origin:
    """The image's bottom LAYERS are ref (repo@sha256:...), which hosts may pull from registry."""

    ref: str
    registry: str  # the registry's API host[:port]: what a host must reach
    layers: int
    config_digest: str = ""  # the base's config (picks its manifest out of a multi-platform index)
    blobs: tuple[Descriptor, ...] = ()  # the registry's blob of each of those layers; () when not read
    # False until the registry is seen to hold ref (with_blobs): on the containerd image store every
    # local image has a repo digest, pulled or built here, so a local base there may be in no registry
    confirmed: bool = True

    def covers(self, index: int) -> bool:
        return index < self.layers

    def unread(self, store: str) -> bool:
        """True while a host on STORE cannot pull it until its registry's manifest is read
        (with_blobs): an OCI load (containerd store) names the pulled layers by their blobs."""
        return not self.confirmed or (store == "containerd" and len(self.blobs) != self.layers)


def find_origin(image: ImageInfo, client: Client, layer_sizes: Sequence[int] | None = None) -> Origin | None:
    """The registry image IMAGE is built on, if the local Docker pulled one, else if its build declared
    one (None otherwise). A pulled base needs the local Docker only; a declared one is looked up in its
    registry once per image. with_blobs() asks the registry for the blobs, for the hosts that need them.
    LAYER_SIZES: IMAGE's history sizes, which narrow the local images to look at (pulled_base)."""
    try:
        base = _pulled_base(image, client, layer_sizes)
    except LocalError as exc:
        log.info("cannot look for %s's base image: %s", image.ref, exc)
        return None
    if base is None:
        try:
            return declared_origin(image, client)
        except (LocalError, OSError) as exc:  # the record unwritable: this ship sends the base
            log.info("cannot look for the base %s's build declared: %s", image.ref, exc)
            return None
    log.info("%s: its bottom %d layer(s) are %s", image.ref, base.layers, base.repo_digest)
    return Origin(base.repo_digest, split_repo(base.repo_digest.split("@", 1)[0]).api_host, base.layers,
                  base.config_digest, confirmed=not is_containerd(client))


def _pulled_base(image: ImageInfo, client: Client, layer_sizes: Sequence[int] | None) -> PulledBase | None:
    """pulled_base; or, when a base was found less than BASE_MAX_AGE_S ago for an image with the
    same layers below its top one (a re-ship after a code change), that base, read afresh: one
    inspect instead of listing every local image (0.5 s for 56 images on the containerd store).
    Only a base pulled since that holds more of those layers (hardly ever: they were built here)
    is not seen until then. With no base found, every ship looks again (one may be pulled)."""
    below = image.diff_ids[:-1]
    if not below:
        return None  # a base is some of the image's bottom layers, never all: a one-layer image has none
    known = layercache.recalled_base(below, BASE_MAX_AGE_S)
    base = confirmed_base(image, client, known) if known else None
    if base is None:
        base = pulled_base(image, client, layer_sizes, layercache.local_layers(), layercache.remember_local)
        if base is not None:
            layercache.remember_base(below, base.image_id)
    return base


def declared_origin(image: ImageInfo, client: Client, path: Path | None = None) -> Origin | None:
    """The base IMAGE's BuildKit build declared (deployer.local.declared), if its registry confirms that its
    layers are IMAGE's bottom ones. The registry is asked once per image (again after a while if it did not
    answer); its answer is remembered, so a re-ship asks nothing before probing its hosts."""
    entry = declared.lookup(image.config_digest, path)
    if entry is None:
        return None
    base = entry.base
    if base is None and entry.due(time.time()):
        base, checked = _resolve(entry.materials, image, client)
        declared.settle(image.config_digest, base, checked, path)
    if base is None:  # (a stored base was picked for these very layers: the key is the config digest)
        return None
    log.info("%s: its bottom %d layer(s) are %s, which its build declared", image.ref, len(base.diff_ids), base.ref)
    return Origin(base.ref, split_repo(base.ref.split("@", 1)[0]).api_host, len(base.diff_ids), base.config_digest)


def _resolve(materials: tuple[declared.Material, ...], image: ImageInfo,
             client: Client) -> tuple[declared.DeclaredBase | None, bool]:
    """The material that is IMAGE's base, as its registry describes it; and whether every one was looked up."""
    found, checked, unreachable = [], True, set()
    for material in materials:
        registry = ""
        try:
            registry = split_repo(material.name).api_host
            if registry in unreachable or _is_local(material, client):  # its failure made checked False
                continue
            found.append(_describe(material, image, client))
        except (RegistryAPIError, requests.RequestException, KeyError, TypeError, ValueError, LocalError) as exc:
            log.info("cannot read %s@%s from its registry: %s", material.name, material.digest, exc)
            checked = False
            if isinstance(exc, (RegistryUnreachable, requests.Timeout)):  # one wait per registry, not per image
                unreachable.add(registry)
    return declared.pick_declared(image.diff_ids, found), checked


def _describe(material: declared.Material, image: ImageInfo, client: Client) -> declared.DeclaredBase:
    """MATERIAL pinned by the digest of its platform's manifest, with its config's layers."""
    reader = ManifestReader.for_docker(client, split_repo(material.name), timeout=10.0)
    digest, manifest = platform_manifest(reader, material.digest, material.platform or image.platform)
    config = str(manifest["config"]["digest"])
    diff_ids = tuple(str(d) for d in reader.config(config)["rootfs"]["diff_ids"])
    return declared.DeclaredBase(f"{material.name}@{digest}", config, diff_ids)


def _is_local(material: declared.Material, client: Client) -> bool:
    """True when the local Docker holds the image MATERIAL names as built or imported here (no repo digest)
    or as that very digest: then no registry is asked (a local-only base has none; pulled_base saw a pulled one)."""
    try:
        attrs = inspect_attrs(client, f"{material.name}:{material.tag}" if material.tag
                              else f"{material.name}@{material.digest}", what="looking up a declared base image")
    except LocalError:
        return False
    digests = [str(d) for d in attrs.get("RepoDigests") or ()]
    return not digests or attrs.get("Id") == material.digest or any(d.endswith(f"@{material.digest}") for d in digests)


def with_blobs(origin: Origin, client: Client) -> Origin:
    """ORIGIN with the registry's blob of each layer, from its manifest (for an OCI load on the
    containerd store), and confirmed: the registry holds it; unchanged when the manifest cannot be read."""
    name, digest = origin.ref.split("@", 1)
    try:
        reader = ManifestReader.for_docker(client, split_repo(name), timeout=10.0)
        layers = image_manifest(reader, digest, origin.config_digest).get("layers") or []
        blobs = tuple(Descriptor(_OCI_TYPE.get(str(d["mediaType"]), str(d["mediaType"])), str(d["digest"]),
                                 int(d["size"])) for d in layers)
    except (RegistryAPIError, requests.RequestException, KeyError, TypeError, ValueError, LocalError) as exc:
        # containerd-store hosts then receive the base as before; classic hosts can still pull it
        log.info("cannot read the manifest of %s: %s", origin.ref, exc)
        return origin
    if len(blobs) != origin.layers:
        log.info("%s: the manifest lists %d layers, the image %d", origin.ref, len(blobs), origin.layers)
        return origin
    return replace(origin, blobs=blobs, confirmed=True)
