"""Pure tar and image-layout pieces shared by the local bundle writer and the host-side load head.

Two layouts load into Docker: the classic `docker save` one (`manifest.json`, `<config hex>.json`,
`<diff hex>/layer.tar`), which every Docker reads, and the OCI image layout (`oci-layout`,
`index.json`, `blobs/sha256/<hex>`), which the containerd image store needs for a partial load.
No I/O and no third-party imports here.
"""
from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass

BLOCK = 512
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"  # uncompressed: its digest is the diff id
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def hex_of(digest: str) -> str:
    return digest.split(":", 1)[-1]


def tar_header(name: str, size: int, directory: bool = False) -> bytes:
    """A ustar header (mode 644/755, mtime 0); ValueError from 8 GiB on, which ustar cannot say."""
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = 0
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def pad(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def tar_member(name: str, data: bytes) -> bytes:
    """A whole tar member: header, data, padding to the block."""
    return tar_header(name, len(data)) + data + pad(len(data))


# -- the classic `docker save` layout -------------------------------------------------------------

def layer_path(diff_id: str) -> str:
    return f"{hex_of(diff_id)}/layer.tar"


def load_manifest(config_name: str, diff_ids: Sequence[str], repo_tags: Sequence[str] = ()) -> bytes:
    """A docker-load manifest.json for the config file CONFIG_NAME over these layers."""
    manifest = [{"Config": config_name, "RepoTags": list(repo_tags) or None,
                 "Layers": [layer_path(d) for d in diff_ids]}]
    return json.dumps(manifest, separators=(",", ":")).encode()


# -- the OCI image layout ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a manifest says about one blob."""

    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def blob_name(digest: str) -> str:
    return f"blobs/sha256/{hex_of(digest)}"


def uncompressed_layer(diff_id: str, raw_size: int) -> Descriptor:
    """A layer named by its uncompressed digest (the diff id), as `docker load` of a save tar stores it."""
    return Descriptor(OCI_LAYER, diff_id, raw_size)


def oci_manifest(config: bytes, layers: Sequence[Descriptor]) -> bytes:
    """An OCI image manifest over CONFIG and LAYERS (canonical bytes: the same input, the same digest)."""
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": Descriptor(OCI_CONFIG, digest_of(config), len(config)).to_json(),
           "layers": [d.to_json() for d in layers]}
    return json.dumps(doc, separators=(",", ":")).encode()


def oci_index(manifest: bytes, ref_names: Sequence[str] = ()) -> bytes:
    """index.json naming one manifest, once per REF_NAME (fully qualified names `docker load` tags it
    with; none: it loads untagged, by id)."""
    desc = Descriptor(OCI_MANIFEST, digest_of(manifest), len(manifest)).to_json()
    entries = [{**desc, "annotations": {"io.containerd.image.name": name}} for name in ref_names] or [desc]
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return json.dumps(doc, separators=(",", ":")).encode()


def oci_small_files(config: bytes, manifest: bytes, ref_names: Sequence[str] = ()) -> bytes:
    """The tar members of an OCI layout other than the layer blobs."""
    return (tar_member("oci-layout", OCI_LAYOUT) + tar_member("index.json", oci_index(manifest, ref_names))
            + tar_member(blob_name(digest_of(manifest)), manifest) + tar_member(blob_name(digest_of(config)), config))
