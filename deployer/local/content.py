"""The containerd image store on the workstation: from an image's id to its config.

On the containerd store an image's id is the digest of its manifest or index, while what a
host checks, and what the classic store calls the id, is the config digest. It is found once
per image id and remembered in the cache (a manifest digest always names the same config):
read from the daemon's content store where this user can read it (root, or a rootless
daemon's own user: blobs are plain files named by digest), else from one streamed
`docker save` (Docker Desktop).
"""
from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import docker

from deployer.errors import LocalError
from deployer.local.cache import Cache
from deployer.local.client import daemon_info, translated
from deployer.local.compress import decompressor
from deployer.local.image import ImageInfo
from deployer.local.savestream import StreamReader
from deployer.tarfmt import digest_of, hex_of

log = logging.getLogger(__name__)

_INDEXES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
_SMALL = 4 << 20  # manifests, indexes and configs are small JSON


def content_roots(info: Mapping[str, Any]) -> list[Path]:
    """Where the daemon's containerd keeps content: its own (dockerd-managed) or the system's."""
    roots = []
    if info.get("DockerRootDir"):
        roots.append(Path(str(info["DockerRootDir"])) / "containerd" / "daemon")
    roots.append(Path("/var/lib/containerd"))
    return [r / "io.containerd.content.v1.content" / "blobs" / "sha256" for r in roots]


def pick_manifest(index: Mapping[str, Any], os: str, architecture: str) -> str | None:
    """The digest of the image manifest for this platform in an index (attestations are skipped)."""
    for desc in index.get("manifests") or []:
        if not isinstance(desc, Mapping):
            continue
        annotations = desc.get("annotations") or {}
        if annotations.get("vnd.docker.reference.type") == "attestation-manifest":
            continue
        platform = desc.get("platform") or {}
        if platform and (platform.get("os"), platform.get("architecture")) != (os or "linux", architecture or "amd64"):
            continue
        return str(desc.get("digest"))
    return None


def is_config_of(doc: object, image: ImageInfo) -> bool:
    """True if DOC is an image config over exactly this image's layers."""
    if not isinstance(doc, dict):
        return False
    rootfs = doc.get("rootfs")
    return isinstance(rootfs, dict) and tuple(rootfs.get("diff_ids") or ()) == image.diff_ids


class _Blobs:
    """Verified reads of one content store dir."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, digest: str) -> bytes:
        data = (self.root / hex_of(digest)).read_bytes()
        if digest_of(data) != digest:
            raise ValueError(f"content {digest} does not hash to its name")
        return data

    def config(self, image: ImageInfo) -> bytes | None:
        """The config of IMAGE (its id is a manifest or index digest), or None."""
        manifest = self.manifest(image)
        if manifest is None or not isinstance(manifest.get("config"), Mapping):
            return None
        config = self.read(str(manifest["config"].get("digest")))
        return config if is_config_of(json.loads(config), image) else None

    def manifest(self, image: ImageInfo) -> Mapping[str, Any] | None:
        """The image manifest for this platform (its id may name an index)."""
        doc = json.loads(self.read(image.id))
        if doc.get("mediaType") in _INDEXES or "manifests" in doc:
            digest = pick_manifest(doc, image.os, image.architecture)
            doc = json.loads(self.read(digest)) if digest else None
        return doc if isinstance(doc, dict) and isinstance(doc.get("layers"), list) else None


class ContentStore:
    """One image's config and layers read straight from the workstation's containerd content store.

    The layer blobs keep the compression they came with (a pull, a build); each is decompressed
    as it is read, in image order, and the caller hashes the result against the diff id."""

    def __init__(self, blobs: _Blobs, config: bytes, layers: list[Mapping[str, Any]]) -> None:
        self._blobs, self._config, self._layers = blobs, config, layers

    @classmethod
    def open(cls, client: Any, image: ImageInfo) -> ContentStore | None:
        """The store, or None (reason logged) when this is not a readable containerd content store."""
        try:
            info = daemon_info(client)
        except Exception as exc:  # noqa: BLE001 - any failure only means "use docker save"
            log.info("reading %s with docker save: docker info failed: %s", image.ref, exc)
            return None
        for root in content_roots(info):
            blobs = _Blobs(root)
            try:
                manifest = blobs.manifest(image)
                if manifest is None:
                    continue
                config = blobs.read(str(manifest["config"]["digest"]))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.debug("content store %s: %s", root, exc)
                continue
            layers = list(manifest["layers"])
            if digest_of(config) == image.config_digest and len(layers) == len(image.diff_ids):
                return cls(blobs, config, layers)
        log.info("reading %s with docker save, not from the content store (not readable here)", image.ref)
        return None

    def config(self) -> bytes:
        return self._config

    def open_layer(self, index: int) -> Iterator[bytes]:
        desc = self._layers[index]
        media_type = str(desc.get("mediaType") or "")
        codec = "zstd" if media_type.endswith("zstd") else "gzip" if media_type.endswith("gzip") else None
        inflate = decompressor(codec) if codec else None
        with open(self._blobs.root / hex_of(str(desc["digest"])), "rb") as fh:
            while chunk := fh.read(1 << 20):
                data = inflate(chunk) if inflate else chunk
                if data:
                    yield data


def from_content_store(info: Mapping[str, Any], image: ImageInfo) -> bytes | None:
    for root in content_roots(info):
        try:
            config = _Blobs(root).config(image)
        except (OSError, ValueError, AttributeError) as exc:
            log.debug("content store %s: %s", root, exc)
            continue
        if config is not None:
            return config
    return None


def _members(reader: StreamReader) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for member in tar:
            yield member, tar


def from_save(client: docker.DockerClient, image: ImageInfo) -> bytes | None:
    """Stream `docker save` until a config over this image's layers goes by."""
    with translated(f"reading the config of {image.ref} with docker save"):
        chunks = client.api.get_image(image.id, chunk_size=1 << 20)
        try:
            for member, tar in _members(StreamReader(iter(chunks))):
                if not member.isfile() or member.size > _SMALL or not member.name.startswith("blobs/"):
                    continue
                f = tar.extractfile(member)
                data = f.read() if f is not None else b""
                if data[:1] != b"{":
                    continue
                try:
                    doc = json.loads(data)
                except ValueError:
                    continue
                if is_config_of(doc, image) and doc.get("os", "linux") == (image.os or "linux"):
                    return data
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()
    return None


def config_digest(client: docker.DockerClient, image: ImageInfo, cache: Cache | None = None) -> str:
    """The config digest of a containerd-store image (its config is cached on the way)."""
    cache = cache or Cache()
    known = cache.config_for(image.id)
    if known is not None:
        return known
    with translated("reading docker info"):
        info = daemon_info(client)
    config = from_content_store(info, image) or from_save(client, image)
    if config is None:
        raise LocalError(f"cannot find the config of {image.ref} ({image.id[:19]}) in the local Docker",
                         hint="check `docker save` of the image works")
    digest = digest_of(config)
    cache.put_config(digest, config)
    cache.remember_config(image.id, digest)
    return digest
