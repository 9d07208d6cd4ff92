"""Which image a daemon holds, compared across image stores: by the digest of its config.

On the classic store (overlay2, any Docker) an image's id is its config digest. On the containerd
image store the id is the digest of the manifest (or of the index over manifests), so two daemons
holding the very same image (same config, same layers) show different ids. The config digest is
the one name every store agrees on; it covers the layers too (the config lists their diff ids).

The Docker API does not hand out a containerd-store image's config digest, so it is read from the
daemon's content store on disk (the testbed's daemons all live on this machine), checking every blob
on the way against its digest. Independent of deployer on purpose: the harness checks its work.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import docker
import docker.errors

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
CONTENT = Path("containerd/daemon/io.containerd.content.v1.content/blobs")


def store_of(info: dict[str, Any]) -> str:
    """'containerd' for the containerd image store, else the storage driver ('overlay2', ...)."""
    for key, value in info.get("DriverStatus") or ():
        if key == "driver-type" and value == "io.containerd.snapshotter.v1":
            return "containerd"
    return str(info.get("Driver") or "?")


def content_dir(info: dict[str, Any]) -> Path:
    """Where a containerd-store daemon's content blobs live (per algorithm below it)."""
    return Path(info["DockerRootDir"]) / CONTENT


def read_blob(root: Path, digest: str) -> bytes:
    """A blob of the content store below root, checked against its digest."""
    algo, hexdigest = digest.split(":", 1)
    try:
        data = (root / algo / hexdigest).read_bytes()
    except OSError as exc:
        raise RuntimeError(f"cannot read {digest} from the content store {root}: {exc}") from exc
    if f"{algo}:{hashlib.new(algo, data).hexdigest()}" != digest:
        raise RuntimeError(f"content blob {digest} in {root} does not match its digest")
    return data


def config_digest_from(attrs: dict[str, Any], read: Any) -> str:
    """The config digest of an inspected image (pure but for `read(digest) -> bytes`).

    No Descriptor (classic store, or Docker < 25): the id is the config digest. Otherwise the id
    names a manifest, or an index whose manifest for the image's platform is taken (BuildKit's
    attestation manifests have platform unknown/unknown and never match)."""
    if not attrs.get("Descriptor"):
        return str(attrs["Id"])
    doc = json.loads(read(str(attrs["Id"])))
    if doc.get("mediaType") in INDEX_TYPES or ("manifests" in doc and "config" not in doc):
        want = {"os": attrs.get("Os"), "architecture": attrs.get("Architecture")}
        variant = attrs.get("Variant")
        found = [m for m in doc.get("manifests") or ()
                 if {k: (m.get("platform") or {}).get(k) for k in want} == want
                 and (not variant or (m.get("platform") or {}).get("variant") in (None, variant))]
        if len(found) != 1:
            raise RuntimeError(f"index {attrs['Id']} has {len(found)} manifests for {want}, expected one")
        doc = json.loads(read(found[0]["digest"]))
    digest = str(doc["config"]["digest"])
    config = json.loads(read(digest))
    diff_ids = (config.get("rootfs") or {}).get("diff_ids")
    if diff_ids != (attrs.get("RootFS") or {}).get("Layers"):
        raise RuntimeError(f"config {digest} lists other layers than the daemon reports for {attrs['Id']}")
    return digest


def inspect(client: docker.DockerClient, ref: str) -> tuple[str, str] | None:
    """(id, config digest) of the image ref names on the daemon, or None when it has none."""
    try:
        attrs = client.api.inspect_image(ref)
    except docker.errors.NotFound:
        return None
    if not attrs.get("Descriptor"):
        return str(attrs["Id"]), str(attrs["Id"])
    root = content_dir(client.info())
    return str(attrs["Id"]), config_digest_from(attrs, lambda d: read_blob(root, d))


def config_digest(client: docker.DockerClient, ref: str) -> str | None:
    """The config digest of the image ref names on a daemon of either store (None: absent)."""
    got = inspect(client, ref)
    return got[1] if got else None
