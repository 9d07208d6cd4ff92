"""Synthetic `docker save` streams in both layouts (shared with test_local_export), and savestream tests.

The real daemons of the testbed (20.10) only produce the legacy layout; these cover the OCI
layout of Docker >= 25 (classic and containerd stores) as well.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator

from deployer.local.image import ImageInfo


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(seed: int, size: int = 200_000) -> bytes:
    """A small layer: a tar with one pseudo-random file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = hashlib.sha256(str(seed).encode()).digest() * (size // 32) + os.urandom(64)
        info = tarfile.TarInfo(f"file{seed}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def image(layers: list[bytes], ref: str = "example/app:v1") -> tuple[ImageInfo, bytes]:
    diff_ids = [sha(layer) for layer in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    info = ImageInfo(ref, sha(config), tuple(diff_ids), sum(map(len, layers)), "linux", "amd64", (ref,))
    return info, config


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def save_legacy(info: ImageInfo, config: bytes, layers: list[bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i, layer in enumerate(layers):
            v1 = hashlib.sha256(f"v1-{i}".encode()).hexdigest()
            _add(tar, f"{v1}/VERSION", b"1.0")
            _add(tar, f"{v1}/json", b"{}")
            _add(tar, f"{v1}/layer.tar", layer)
        _add(tar, f"{info.id_hex}.json", config)
        _add(tar, "manifest.json", b"[]")
    return buf.getvalue()


def save_oci(info: ImageInfo, config: bytes, layers: list[bytes], compressed: bool = False) -> bytes:
    """Docker >= 25: blobs/sha256; with compressed=True layers are gzip blobs (containerd store)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add(tar, "blobs/sha256/" + sha(b'{"mediaType":"manifest"}').split(":")[1], b'{"mediaType":"manifest"}')
        for layer in reversed(layers):  # order is not promised in this layout
            data = gzip.compress(layer, mtime=0) if compressed else layer
            _add(tar, "blobs/sha256/" + sha(data).split(":")[1], data)
        _add(tar, f"blobs/sha256/{info.id_hex}", config)
        _add(tar, "index.json", b"{}")
        _add(tar, "manifest.json", b"[]")
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    return buf.getvalue()


class FakeAPI:
    def __init__(self, stream: bytes) -> None:
        self.stream = stream
        self.calls: list[str] = []

    def get_image(self, image_id: str, chunk_size: int = 2 << 20) -> Iterator[bytes]:
        self.calls.append(image_id)
        step = 65_537  # odd chunking: entries straddle chunk boundaries
        return iter([self.stream[i : i + step] for i in range(0, len(self.stream), step)])


class FakeClient:
    """Only the one SDK call the Exporter makes; stands in for the daemon's save stream."""

    def __init__(self, stream: bytes) -> None:
        self.api = FakeAPI(stream)


# ---- tests of deployer.local.savestream -------------------------------------------------------

from deployer.local.savestream import Entry, StreamReader, classify

_IMG = "sha256:" + "f" * 64
_DIFF = "sha256:" + "d" * 64


def test_classify_legacy_layout() -> None:
    ids = frozenset([_DIFF])
    assert classify(f"{'a' * 64}/layer.tar", _IMG, ids) == Entry("layer")
    assert classify(f"./{'a' * 64}/layer.tar", _IMG, ids) == Entry("layer")
    assert classify(f"{'f' * 64}.json", _IMG, ids) == Entry("config")
    assert classify(f"{'a' * 64}/json", _IMG, ids) == Entry("other")
    assert classify("manifest.json", _IMG, ids) == Entry("other")
    assert classify("repositories", _IMG, ids) == Entry("other")


def test_classify_oci_layout() -> None:
    ids = frozenset([_DIFF])
    assert classify(f"blobs/sha256/{'d' * 64}", _IMG, ids) == Entry("layer", _DIFF)
    assert classify(f"blobs/sha256/{'f' * 64}", _IMG, ids) == Entry("config")
    assert classify(f"blobs/sha256/{'0' * 64}", _IMG, ids) == Entry("maybe-layer")
    assert classify("index.json", _IMG, ids) == Entry("other")
    assert classify("oci-layout", _IMG, ids) == Entry("other")


def test_stream_reader_short_reads_and_counts() -> None:
    r = StreamReader(iter([b"abc", b"", b"defgh", b"i"]))
    out = []
    while chunk := r.read(2):
        out.append(chunk)
    assert b"".join(out) == b"abcdefghi"
    assert max(len(c) for c in out) <= 2
    assert r.bytes_read == 9


def test_stream_reader_read_all_and_readinto() -> None:
    r = StreamReader(iter([b"abc", b"def"]))
    buf = bytearray(2)
    assert r.readinto(buf) == 2 and bytes(buf) == b"ab"
    assert r.read() == b"cdef"
    assert r.read(10) == b""
