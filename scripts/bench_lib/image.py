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

from . import digests
from . import dockerfile as df
from .config import ZSTD_LEVEL


@dataclass(frozen=True)
class LayerStat:
    diff_id: str
    size: int  # bytes of the uncompressed layer tar
    zstd_size: int  # bytes after zstd at deployer's default level
    # bytes of the layer in `docker save`'s output: `size` on the classic store; on the containerd
    # store the blob as its content store keeps it, which may be compressed (gzip from the builder)
    saved_size: int = 0


@dataclass(frozen=True)
class ImageInfo:
    ref: str
    id: str  # the workstation daemon's id: the config digest on overlay2, a manifest/index digest on containerd
    layers: tuple[LayerStat, ...]
    config_digest: str = ""  # the same image's name on every store; what the hosts are checked against

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def zstd_size(self) -> int:
        return sum(layer.zstd_size for layer in self.layers)

    @property
    def saved_size(self) -> int:
        return sum(layer.saved_size for layer in self.layers)

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "id": self.id, "config_digest": self.config_digest, "size": self.size,
                "zstd_size": self.zstd_size, "saved_size": self.saved_size,
                "layers": [vars(layer) for layer in self.layers]}


@dataclass(frozen=True)
class ImagePair:
    v1: ImageInfo
    v2: ImageInfo
    base_ref: str = ""  # the base both are built on (every layer but the code layer)

    @property
    def base_tag(self) -> str:
        return self.base_ref.rsplit(":", 1)[-1]

    @property
    def code_layer(self) -> LayerStat:
        """v2's top layer: the only one v1 lacks."""
        return self.v2.layers[-1]


def client() -> docker.DockerClient:
    """The workstation daemon (DOCKER_HOST from `scripts/testbed env`); big images need long timeouts."""
    return docker.from_env(timeout=3600)


def _build(cli: docker.DockerClient, text: str, tag: str, log: Callable[[str], None]) -> None:
    log(f"building {tag}")
    # The recipe needs no network: build containers get none (and a daemon without a bridge can build).
    stream = cli.api.build(fileobj=io.BytesIO(text.encode()), tag=tag, rm=True, forcerm=True,
                           decode=True, network_mode="none")
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


_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


def _uncompressed(fh: IO[bytes]) -> IO[bytes]:
    """The layer tar itself: a containerd-store daemon's `docker save` writes layers as its content
    store holds them, which may be gzip or zstd (pulled or pushed images); the classic store's never."""
    head = fh.read(4)
    rest = io.BufferedReader(_Prefixed(head, fh))  # type: ignore[arg-type]
    if head[:2] == _GZIP:
        import gzip
        return cast(IO[bytes], gzip.GzipFile(fileobj=rest))
    if head == _ZSTD:
        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(rest))
    return cast(IO[bytes], rest)


class _Prefixed(io.RawIOBase):
    """Bytes already read, then the rest of a stream."""

    def __init__(self, head: bytes, fh: IO[bytes]) -> None:
        self.head, self.fh = head, fh

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.fh.read(len(b))
        b[:len(data)] = data
        return len(data)


def _layer_stats(ref: str) -> tuple[LayerStat, ...]:
    """Stream `docker save` once: every layer's size and zstd size, in image order.

    Either store's `docker save` has a manifest.json naming each layer's path in the tar (`<id>/layer.tar`
    on the classic store, `blobs/sha256/<digest>` in the containerd store's OCI layout)."""
    proc = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    sizes: dict[str, tuple[int, int, int]] = {}
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
                counter, raw = _Counter(), 0
                src = _uncompressed(fh)
                with cctx.stream_writer(cast(IO[bytes], counter), closefd=False) as writer:
                    while chunk := src.read(1 << 20):
                        raw += len(chunk)
                        writer.write(chunk)
                sizes[member.name] = (raw, counter.n, member.size)
    if proc.wait() != 0:
        raise RuntimeError(f"docker save {ref} failed (exit {proc.returncode})")
    out = []
    config = _config(ref)
    for path, diff_id in zip(manifest[0]["Layers"], config["rootfs"]["diff_ids"]):
        size, zsize, saved = sizes[path]
        out.append(LayerStat(diff_id, size, zsize, saved))
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


def inspect_pair(v1: str, v2: str, base: str = "") -> ImagePair:
    """Ids and per-layer sizes (raw and zstd) of both versions."""
    cli = client()
    infos = []
    for ref in (v1, v2):
        got = digests.inspect(cli, ref)
        if got is None:
            raise RuntimeError(f"{ref} vanished from the workstation daemon")
        infos.append(ImageInfo(ref, got[0], _layer_stats(ref), got[1]))
    pair = ImagePair(*infos, base_ref=base)
    ids1, ids2 = [x.diff_id for x in pair.v1.layers], [x.diff_id for x in pair.v2.layers]
    if ids1[:-1] != ids2[:-1] or ids1[-1] == ids2[-1]:
        raise RuntimeError(f"{v1} and {v2} must differ in their top layer only; rebuild with --rebuild")
    return pair
