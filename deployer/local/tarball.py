"""Docker-load tarballs built from cached blobs: manifest, tags, and a compressed stream.

A load stream is a tar of `manifest.json`, `<image id hex>.json` (the config) and
`<diff hex>/layer.tar` per layer, compressed as a whole. It is built as a list of parts whose
concatenation is that compressed stream: small inline frames (tar headers, config, padding)
and the cached compressed layer blobs themselves, unchanged, because concatenated zstd frames
and concatenated gzip members decode as one stream (`zstd -dc`, Go's readers, docker load).
So a layer is compressed once per ship and never re-read to build a tarball.

Layers the target already has may be left out: `docker load` on the overlay2 store skips a
layer whose ChainID exists without opening its file (DESIGN.md).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from deployer.local.cache import Blob
from deployer.local.compress import compress_bytes
from deployer.local.image import ImageInfo
from deployer.refs import qualified
from deployer.tarfmt import (
    BLOCK,
    blob_name,
    layer_path,
    load_manifest,
    oci_manifest,
    oci_small_files,
    pad,
    tar_header,
    tar_member,
    uncompressed_layer,
)

__all__ = ["BLOCK", "layer_path", "load_manifest", "tar_header", "tar_member"]

_ID = re.compile(r"^(sha256:)?[0-9a-f]{12,64}$")


def normalize_tag(ref: str) -> str | None:
    """`name[:tag]` as docker load wants it (`:latest` added); None for an id or a digest ref."""
    if _ID.match(ref) or "@" in ref:
        return None
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"


def load_tags(ref: str, image: ImageInfo) -> tuple[str, ...]:
    """The tags a bundle of `ref` should carry: the ref itself, or the image's tags for an id."""
    tag = normalize_tag(ref)
    return (tag,) if tag else tuple(t for t in image.repo_tags if t != "<none>:<none>")


def config_path(image: ImageInfo) -> str:
    return f"{image.config_digest.split(':', 1)[-1]}.json"


def manifest_json(image: ImageInfo, repo_tags: Sequence[str]) -> bytes:
    """The docker-load manifest for one image (every layer listed, present in the tar or not)."""
    return load_manifest(config_path(image), image.diff_ids, repo_tags)


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True)
class Part:
    """A piece of a compressed load stream: inline compressed bytes, or a cached blob file."""

    data: bytes = b""
    blob: Blob | None = None

    @property
    def size(self) -> int:
        return self.blob.size if self.blob is not None else len(self.data)


def load_stream_parts(
    image: ImageInfo,
    config: bytes,
    repo_tags: Sequence[str],
    blobs: Iterable[Blob],
    codec: str,
    level: int = 3,
    *,
    fmt: str = "legacy",
    sizes: Mapping[str, int] | None = None,
) -> list[Part]:
    """Parts whose concatenation is a `codec`-compressed load tar with the given layers.

    FMT "legacy" is the classic `docker save` layout; "oci" an OCI image layout for the containerd
    image store, whose manifest names every layer by its diff id (the blobs decompress to exactly
    that) and so needs the tar size of every layer it leaves out (SIZES)."""
    by_diff: dict[str, Blob] = {}
    for blob in blobs:
        if blob.codec != codec:
            raise ValueError(f"blob {blob.diff_id} is {blob.codec}, stream is {codec}")
        by_diff.setdefault(blob.diff_id, blob)
    stray = set(by_diff) - set(image.diff_ids)
    if stray:
        raise ValueError(f"not layers of {image.ref}: {sorted(stray)}")
    if fmt == "oci":
        known = {**(sizes or {}), **{d: b.raw_size for d, b in by_diff.items()}}
        unknown = [d for d in image.diff_ids if d not in known]
        if unknown:
            raise ValueError(f"no size known for layers {unknown}")
        manifest = oci_manifest(config, [uncompressed_layer(d, known[d]) for d in image.diff_ids])
        raw = oci_small_files(config, manifest, [qualified(t) for t in repo_tags])
    elif fmt == "legacy":
        raw = tar_member("manifest.json", manifest_json(image, repo_tags))
        raw += tar_member(config_path(image), config)
    else:
        raise ValueError(f"unknown load format {fmt!r}")
    parts: list[Part] = []
    for diff_id in dict.fromkeys(image.diff_ids):  # a repeated layer is stored once
        layer = by_diff.get(diff_id)
        if layer is None:
            continue
        if fmt == "oci":
            raw += tar_header(blob_name(diff_id), layer.raw_size)
        else:
            d = layer_path(diff_id)
            raw += tar_header(d.rsplit("/", 1)[0] + "/", 0, directory=True) + tar_header(d, layer.raw_size)
        parts.append(Part(compress_bytes(codec, level, raw)))
        parts.append(Part(blob=layer))
        raw = pad(layer.raw_size)
    raw += b"\0" * (2 * BLOCK)
    parts.append(Part(compress_bytes(codec, level, raw)))
    return parts


def iter_parts(parts: Sequence[Part], chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """The compressed stream, chunk by chunk (blob files are read, never held whole)."""
    for part in parts:
        if part.blob is None:
            yield part.data
            continue
        with open(part.blob.path, "rb") as fh:
            while chunk := fh.read(chunk_size):
                yield chunk


def write_parts(parts: Sequence[Part], out: Writable, chunk_size: int = 1 << 20) -> int:
    """Write the compressed stream to out; returns bytes written."""
    written = 0
    for chunk in iter_parts(parts, chunk_size):
        out.write(chunk)
        written += len(chunk)
    return written


def raw_entries(image: ImageInfo, config: bytes, repo_tags: Sequence[str]) -> Mapping[str, bytes]:
    """The small files of a load tar by name (for writers that stage files on a host)."""
    return {"manifest.json": manifest_json(image, repo_tags), config_path(image): config}
