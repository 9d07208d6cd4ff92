"""Build the synthetic image pair on the workstation daemon and measure its layers."""
from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, cast

import docker
import zstandard

from . import dockerfile as df
from .config import ZSTD_LEVEL


@dataclass(frozen=True)
class LayerStat:
    diff_id: str
    size: int  # bytes of the uncompressed layer tar
    zstd_size: int  # bytes after zstd at deployer's default level


@dataclass(frozen=True)
class ImageInfo:
    ref: str
    id: str
    layers: tuple[LayerStat, ...]

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def zstd_size(self) -> int:
        return sum(layer.zstd_size for layer in self.layers)

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "id": self.id, "size": self.size, "zstd_size": self.zstd_size,
                "layers": [vars(layer) for layer in self.layers]}


@dataclass(frozen=True)
class ImagePair:
    v1: ImageInfo
    v2: ImageInfo

    @property
    def code_layer(self) -> LayerStat:
        """v2's top layer: the only one v1 lacks."""
        return self.v2.layers[-1]


def client() -> docker.DockerClient:
    """The workstation daemon (DOCKER_HOST from `scripts/testbed env`); big images need long timeouts."""
    return docker.from_env(timeout=3600)


def _build(cli: docker.DockerClient, text: str, tag: str, log: Callable[[str], None]) -> None:
    log(f"building {tag}")
    stream = cli.api.build(fileobj=io.BytesIO(text.encode()), tag=tag, rm=True, forcerm=True,
                           decode=True)
    for chunk in stream:
        if "error" in chunk:
            raise RuntimeError(f"building {tag} on the workstation daemon failed: {chunk['error']}")


def _exists(cli: docker.DockerClient, ref: str) -> bool:
    try:
        cli.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def build_pair(size_bytes: int, log: Callable[[str], None], rebuild: bool = False) -> tuple[str, str]:
    """Build (or reuse) base, v1 and v2 for this size; returns the v1 and v2 refs."""
    cli = client()
    layers = df.plan(size_bytes)
    code = layers[-1].size
    base, v1, v2 = df.base_ref(size_bytes), df.app_ref(size_bytes, "v1"), df.app_ref(size_bytes, "v2")
    if rebuild or not _exists(cli, base):
        _build(cli, df.base_dockerfile(layers, size_bytes), base, log)
    for ref, version in ((v1, "v1"), (v2, "v2")):
        if rebuild or not _exists(cli, ref):
            _build(cli, df.app_dockerfile(base, df.code_layer(code, version), version), ref, log)
    return v1, v2


def _layer_stats(ref: str) -> tuple[LayerStat, ...]:
    """Stream `docker save` once: every layer's size and zstd size, in image order."""
    proc = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    sizes: dict[str, tuple[int, int]] = {}
    manifest: list[dict[str, Any]] = []
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            fh = tar.extractfile(member)
            assert fh is not None
            if member.name == "manifest.json":
                manifest = json.load(fh)
            elif member.size > 1024 or member.name.endswith("layer.tar"):
                counter = _Counter()
                with cctx.stream_writer(cast(IO[bytes], counter), closefd=False) as writer:
                    while chunk := fh.read(1 << 20):
                        writer.write(chunk)
                sizes[member.name] = (member.size, counter.n)
    if proc.wait() != 0:
        raise RuntimeError(f"docker save {ref} failed (exit {proc.returncode})")
    out = []
    config = _config(ref)
    for path, diff_id in zip(manifest[0]["Layers"], config["rootfs"]["diff_ids"]):
        size, zsize = sizes[path]
        out.append(LayerStat(diff_id, size, zsize))
    return tuple(out)


class _Counter(io.RawIOBase):
    """A sink that only counts bytes."""

    def __init__(self) -> None:
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.n += len(b)
        return len(b)


def _config(ref: str) -> dict[str, Any]:
    attrs = client().images.get(ref).attrs
    return {"rootfs": {"diff_ids": attrs["RootFS"]["Layers"]}}


def inspect_pair(v1: str, v2: str) -> ImagePair:
    """Ids and per-layer sizes (raw and zstd) of both versions."""
    cli = client()
    infos = []
    for ref in (v1, v2):
        infos.append(ImageInfo(ref, cli.images.get(ref).id, _layer_stats(ref)))
    pair = ImagePair(*infos)
    ids1, ids2 = [x.diff_id for x in pair.v1.layers], [x.diff_id for x in pair.v2.layers]
    if ids1[:-1] != ids2[:-1] or ids1[-1] == ids2[-1]:
        raise RuntimeError(f"{v1} and {v2} must differ in their top layer only; rebuild with --rebuild")
    return pair
