"""`deploy bundle`: one compressed docker-load tarball for sites no network reaches.

The file is a zstd (or gzip) stream of a docker-load tar: `zstd -dc FILE | docker load`
works with any Docker (and `docker load -i FILE` with Docker >= 23, or any Docker for gzip).
It is assembled from the shared blob cache: compressed layers are copied verbatim between
small inline frames (see deployer.local.tarball), so nothing is compressed twice.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import docker

from deployer.codec import parse_version
from deployer.commands.layers import missing_layers
from deployer.errors import LocalError
from deployer.local.cache import Cache
from deployer.local.export import Exporter
from deployer.local.image import ImageInfo
from deployer.local.sizes import LayerSizes
from deployer.local.tarball import load_stream_parts, load_tags, write_parts

# (phase, done bytes, total bytes); phase is "exporting" or "writing"
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Target:
    """What the bundle is for: the layers to leave out and how the host will load it."""

    host: str
    present: frozenset[str]
    server_version: str = ""
    image_store: str = ""
    decompressors: frozenset[str] = frozenset()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class BundleResult:
    """What `deploy bundle` wrote."""

    file: str
    image: str
    image_id: str
    tags: tuple[str, ...]
    codec: str
    level: int
    target: str | None
    layers_total: int
    layers_included: int
    bytes: int
    raw_bytes: int
    seconds: float
    load_command: str

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["tags"] = list(self.tags)
        d["for"] = d.pop("target")
        return d


def load_command(file: str, codec: str, target: Target | None) -> str:
    """How the receiving host loads the bundle (pure)."""
    name = os.path.basename(file)
    if codec == "gzip":
        return f"docker load -i {name}"
    version = parse_version(target.server_version) if target else None
    if version is not None and version >= (23, 0):
        return f"docker load -i {name}"
    return f"zstd -dc {name} | docker load"


def target_warnings(codec: str, target: Target | None) -> list[str]:
    """Problems the receiving host will have with this bundle (pure)."""
    if target is None:
        return []
    out = list(target.warnings)
    version = parse_version(target.server_version)
    if codec == "zstd" and (version is None or version < (23, 0)) and "zstd" not in target.decompressors:
        out.append(
            f"{target.host} has Docker {target.server_version or '(unknown)'} (reads zstd only from 23) "
            "and no zstd binary: bring zstd along, or write the bundle with --codec gzip"
        )
    return out


def write_bundle(
    image: ImageInfo,
    out: str | os.PathLike[str],
    *,
    codec: str = "zstd",
    level: int = 3,
    target: Target | None = None,
    tags: Sequence[str] | None = None,
    client: docker.DockerClient | None = None,
    cache: Cache | None = None,
    progress: Progress | None = None,
) -> BundleResult:
    """Write the bundle atomically (FILE.partial, then rename); only missing layers with a target."""
    started = time.monotonic()
    path = Path(out)
    if not path.parent.is_dir():
        raise LocalError(f"cannot write {path}: directory {path.parent} does not exist")
    cache = cache or Cache()
    indexes = missing_layers(image.diff_ids, target.present) if target else tuple(range(len(image.diff_ids)))
    oci = target is not None and target.image_store == "containerd"
    sizes = LayerSizes(image, client, cache).known() if oci else None
    if sizes is not None:
        # an OCI layout names every layer it leaves out by its tar size: one whose size is unknown goes in
        first = min(indexes, default=len(image.diff_ids))
        indexes = tuple(sorted({*indexes, *(i for i in range(first) if image.diff_ids[i] not in sizes)}))
    wanted = {image.diff_ids[i] for i in indexes}
    tags = tuple(tags) if tags is not None else load_tags(image.ref, image)
    report = progress or (lambda phase, done, total: None)
    exporter = Exporter(image, {codec: wanted}, level=level, client=client, cache=cache).start()
    try:
        # wait() raises the export's error, and ends when its thread does: never a spin forever
        while not exporter.wait(timeout=0.2):
            report("exporting", exporter.bytes_read, image.size)
        blobs = [exporter.blob(d, codec) for d in dict.fromkeys(image.diff_ids[i] for i in indexes)]
        config = exporter.config()
    finally:
        exporter.close()
    # for the containerd store, an OCI layout whose manifest names every layer by its diff id
    parts = load_stream_parts(image, config, tags, blobs, codec, level, fmt="oci" if oci else "legacy", sizes=sizes)
    total = sum(p.size for p in parts)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as fh:
            written = write_parts(parts, _Counting(fh, lambda n: report("writing", n, total)))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise LocalError(f"writing bundle {path} failed: {exc}", hint="check free space and permissions") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    try:
        cache.prune(keep=[b.path for b in blobs])
    except OSError:
        pass  # a full cache is a nuisance, not a failed bundle
    return BundleResult(
        file=str(path),
        image=image.ref,
        image_id=image.id,
        tags=tags,
        codec=codec,
        level=level,
        target=target.host if target else None,
        layers_total=len(image.diff_ids),
        layers_included=len(blobs),
        bytes=written,
        raw_bytes=sum(b.raw_size for b in blobs),
        seconds=round(time.monotonic() - started, 3),
        load_command=load_command(str(path), codec, target),
    )


class _Counting:
    """A write-only file wrapper that reports the running byte count."""

    def __init__(self, fh: Any, on_write: Callable[[int], None]) -> None:
        self._fh, self._on_write, self.count = fh, on_write, 0

    def write(self, data: bytes) -> int:
        self._fh.write(data)
        self.count += len(data)
        self._on_write(self.count)
        return len(data)
