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

from deployer.chain import chain_ids
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


CC = {"Hostname": "", "Env": None, "Cmd": None, "Image": "", "Labels": None}


def save_legacy(
    info: ImageInfo, config: bytes, layers: list[bytes], identifiable: bool = True, skip: frozenset[int] = frozenset()
) -> bytes:
    """Docker < 25: v1 dirs named by moby's CreateID, every entry sorted by name like the daemon's."""
    entries: dict[str, bytes] = {}
    parent = ""
    for i, (layer, chain) in enumerate(zip(layers, chain_ids(info.diff_ids))):
        doc = {"container_config": CC, "created": "1970-01-01T00:00:00Z", "layer_id": chain}
        if parent:
            doc["parent"] = parent
        v1 = hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()
        if i == len(layers) - 1:
            v1 = hashlib.sha256(b"top" + v1.encode()).hexdigest()  # the top id hashes the full config
            meta = {"id": v1, "created": "2026-01-01T00:00:00Z", "container_config": CC, "config": {"Cmd": ["sh"]}}
        else:
            meta = {"id": v1, "created": "1970-01-01T00:00:00Z", "container_config": CC, "os": "linux"}
        if not identifiable:
            meta = {"id": v1}
        if i not in skip:
            entries[f"{v1}/VERSION"] = b"1.0"
            entries[f"{v1}/json"] = json.dumps(meta).encode()
            entries[f"{v1}/layer.tar"] = layer
        parent = f"sha256:{v1}"
    entries[f"{info.id_hex}.json"] = config
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in sorted(entries):
            _add(tar, name, entries[name])
        _add(tar, "manifest.json", b"[]")
        _add(tar, "repositories", b"{}")
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

from deployer.local.savestream import (
    Entry,
    StreamReader,
    classify,
    identify_v1,
    legacy_dir,
)

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


def test_identify_v1_matches_a_real_docker_20_10_save() -> None:
    """Entries copied from `docker save` of a 3-layer image on dockerd 20.10.24."""
    diff_ids = [
        "sha256:df4199fbf21edca34313bda5f932610343973cc2f3e80c3fcc289af655649f74",
        "sha256:fc60bcac99487a4b82084c3c9a2e2e7f7414490348200d4cc0beb2c1d6a2c527",
        "sha256:80f02f0b1110c9ee65bbfb7ee339bb4e96d01c18dc267b87c4828219d276e6d8",
    ]
    cc = (
        '{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,'
        '"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":null,'
        '"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null}'
    )
    base = "a432901a38353a5bd154a9c3e9dd853264eafc2cd59e12c379a72f72c34e6881"
    mid = "0dd8a9ca8f8c16890797486c08f46d7680efa315b48376ca083bf303f9bb484a"
    chain = chain_ids(diff_ids)
    base_json = f'{{"id":"{base}","created":"1970-01-01T00:00:00Z","container_config":{cc},"os":"linux"}}'
    mid_json = f'{{"id":"{mid}","parent":"{base}","created":"1970-01-01T00:00:00Z","container_config":{cc},"os":"linux"}}'
    top_json = f'{{"id":"ffff","parent":"{mid}","created":"2026-11-29T18:58:31Z","container_config":{cc},"config":{cc}}}'
    assert identify_v1(base_json.encode(), chain) == 0
    assert identify_v1(mid_json.encode(), chain) == 1
    assert identify_v1(top_json.encode(), chain) == 2
    assert identify_v1(b"not json", chain) is None
    assert identify_v1(b'{"id":"abc","created":"1970-01-01T00:00:00Z","container_config":{}}', chain) is None


def test_legacy_dir() -> None:
    assert legacy_dir(f"{'a' * 64}/json", "json") == "a" * 64
    assert legacy_dir(f"./{'a' * 64}/layer.tar", "layer.tar") == "a" * 64
    assert legacy_dir(f"{'a' * 64}/json", "layer.tar") is None
    assert legacy_dir("manifest.json", "json") is None
