"""Where an image's base came from: hosts that reach that registry pull the base from it, so only
the user's own layers cross the user's uplink (issue 19).

    find_origin(image, client) -> Origin | None

The base is the longest run of the image's bottom layers that the local Docker pulled from a
registry (deployer.local.image.pulled_base), pinned by digest. For a host on the containerd
image store, the OCI load that follows the pull names those layers by the registry's blobs
(what the pull left in the host's content store); they come from the registry's manifest, read
here with the local Docker's credentials. Credentials never go to a host: a host pulls with its own.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import requests

from deployer.errors import LocalError
from deployer.local.client import Client
from deployer.local.image import ImageInfo, pulled_base
from deployer.ship.registry_api import ManifestReader, RegistryAPIError, image_manifest, split_repo
from deployer.tarfmt import Descriptor

log = logging.getLogger(__name__)
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

    def covers(self, index: int) -> bool:
        return index < self.layers


def find_origin(image: ImageInfo, client: Client) -> Origin | None:
    """The registry image IMAGE is built on, if the local Docker pulled one (None otherwise). Reads
    the local Docker only; with_blobs() asks the registry, for the hosts that need it."""
    try:
        base = pulled_base(image, client)
    except LocalError as exc:
        log.info("cannot look for %s's base image: %s", image.ref, exc)
        return None
    if base is None:
        return None
    log.info("%s: its bottom %d layer(s) are %s", image.ref, base.layers, base.repo_digest)
    return Origin(base.repo_digest, split_repo(base.repo_digest.split("@", 1)[0]).api_host, base.layers,
                  base.config_digest)


def with_blobs(origin: Origin, client: Client) -> Origin:
    """ORIGIN with the registry's blob of each layer, from its manifest (for an OCI load on the
    containerd store); unchanged when the manifest cannot be read."""
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
    return replace(origin, blobs=blobs)
