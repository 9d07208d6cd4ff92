"""The local image side against real daemons: inspect, chain ids, streamed export, codecs on 20.10.

Images are built fresh (unique random layers) on the testbed's workstation daemon, so no host
has them before a test loads them; each test removes what it loaded.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import zstandard
from image_support import build_random, remove_image

from deployer.commands.layers import missing_layers, parse_present, present_layers_argv
from deployer.local.cache import Cache
from deployer.local.chain import chain_ids
from deployer.local.export import Exporter
from deployer.local.image import ImageInfo, inspect
from deployer.local.store import LayerStore, StoreError
from deployer.local.tarball import config_path, layer_path, manifest_json

HOST = "gpu02"  # Docker 28, classic store: a loaded image's id is its config digest
OLD = "cpu01"  # Docker 20.10


def build(client: docker.DockerClient, tag: str, sizes: list[int], base: str = "deployer-testbed/busybox:latest") -> str:
    """Build `tag` FROM base with one fresh random-content layer per size (bytes); returns its id."""
    return str(build_random(client, tag, sizes, base).id)


remove = remove_image


@pytest.fixture(scope="module")
def ws(testbed: Any) -> docker.DockerClient:
    return testbed.docker("ws")


@pytest.fixture(scope="module")
def image(ws: docker.DockerClient) -> Iterator[ImageInfo]:
    tag = f"deployer-test/export:{uuid.uuid4().hex[:10]}"
    build(ws, tag, [3_000_000, 2_000_000])
    yield inspect(tag, ws)
    remove(ws, tag)


def _load_tar(image: ImageInfo, config: bytes, files: dict[str, bytes], tag: str) -> bytes:
    """An uncompressed docker-load tar with the given layer files (diff id -> file bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        entries = {"manifest.json": manifest_json(image, [tag]), config_path(image): config}
        entries.update({layer_path(d): data for d, data in files.items()})
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _remote_layers(testbed: Any, ref: str) -> dict[str, Any]:
    res = testbed.ssh(HOST, shlex.join(["docker", "image", "inspect", ref]))
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)[0]


def test_inspect_and_chain_ids_match_what_the_host_loads(testbed: Any, ws: docker.DockerClient, image: ImageInfo,
                                                        tmp_path: Path) -> None:
    assert image.id.startswith("sha256:") and len(image.diff_ids) == 4  # busybox + id + 2 blobs
    assert image.os == "linux" and image.architecture and image.size > 5_000_000
    assert image.ref in image.repo_tags
    exp = Exporter(image, {"gzip": set(image.diff_ids)}, client=ws, cache=Cache(tmp_path)).start()
    files = {d: exp.blob(d, "gzip", timeout=120).path.read_bytes() for d in image.diff_ids}
    host = testbed.docker(HOST)
    tag = f"deployer-test/export-loaded:{uuid.uuid4().hex[:8]}"
    try:
        before = parse_present(testbed.ssh(HOST, shlex.join(present_layers_argv(("docker",)))).stdout.decode())
        assert missing_layers(image.diff_ids, before)  # fresh layers: the host cannot have them
        loaded = host.images.load(_load_tar(image, exp.config(), files, tag))
        assert [i.id for i in loaded] == [image.config_digest]
        attrs = _remote_layers(testbed, tag)
        assert attrs["Id"] == image.config_digest and tuple(attrs["RootFS"]["Layers"]) == image.diff_ids
        # the one remote listing command, over real SSH, now sees every chain of the image
        res = testbed.ssh(HOST, shlex.join(present_layers_argv(("docker",))))
        assert res.returncode == 0, res.stderr
        present = parse_present(res.stdout.decode())
        assert set(chain_ids(image.diff_ids)) <= present
        assert missing_layers(image.diff_ids, present) == ()
    finally:
        remove(host, image.config_digest)


def test_present_layers_on_a_host_with_no_images(testbed: Any) -> None:
    # An empty list from docker, as on a fresh host: the argv must print nothing and succeed.
    argv = present_layers_argv(("sh", "-c", 'case "$1" in images) exit 0;; *) exit 9;; esac', "docker"))
    res = testbed.ssh(HOST, shlex.join(argv))
    assert (res.returncode, res.stdout) == (0, b"")


def test_export_blobs_decompress_to_their_diff_ids(ws: docker.DockerClient, image: ImageInfo, tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    wanted = {"zstd": set(image.diff_ids[1:]), "gzip": {image.diff_ids[-1]}}
    with Exporter(image, wanted, level=3, client=ws, cache=cache) as exp:
        blobs = list(exp.ready())
        config = exp.config()
    assert "sha256:" + hashlib.sha256(config).hexdigest() == image.config_digest
    assert sorted((b.codec, b.diff_id) for b in blobs) == sorted((c, d) for c, ids in wanted.items() for d in ids)
    for blob in blobs:
        data = blob.path.read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob.digest and len(data) == blob.size
        raw = gzip.decompress(data) if blob.codec == "gzip" else zstandard.ZstdDecompressor().decompressobj().decompress(data)
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == blob.diff_id and len(raw) == blob.raw_size
    assert cache.lookup(image.diff_ids[0], "zstd", 3) is None  # the base layer was not wanted
    again = Exporter(image, wanted, client=ws, cache=cache).start()
    assert again.done and again.exported_blobs == 0  # all from the cache, no docker save


@pytest.mark.parametrize(("codec", "loads"), [("gzip", True), ("zstd", False)])
def test_compressed_layer_files_on_docker_20_10(testbed: Any, ws: docker.DockerClient, image: ImageInfo,
                                                tmp_path: Path, codec: str, loads: bool) -> None:
    """gzip `layer.tar` files load natively on 20.10 (same id); zstd ones need Docker >= 23."""
    host = testbed.docker(OLD)
    assert host.version()["Version"].startswith("20.10")
    exp = Exporter(image, {codec: set(image.diff_ids)}, client=ws, cache=Cache(tmp_path)).start()
    files = {d: exp.blob(d, codec, timeout=120).path.read_bytes() for d in image.diff_ids}
    tag = f"deployer-test/export-{codec}:{uuid.uuid4().hex[:8]}"
    try:
        if loads:
            loaded = host.images.load(_load_tar(image, exp.config(), files, tag))
            assert [i.id for i in loaded] == [image.config_digest]
        else:
            with pytest.raises(docker.errors.DockerException, match="Error processing tar file"):
                host.images.load(_load_tar(image, exp.config(), files, tag))
    finally:
        remove(host, image.config_digest)


def _inflate(codec: str, data: bytes) -> bytes:
    return gzip.decompress(data) if codec == "gzip" else zstandard.ZstdDecompressor().decompressobj().decompress(data)


def _export(image: ImageInfo, wanted: dict[str, set[str]], client: docker.DockerClient, cache_dir: Path,
            **kw: Any) -> tuple[Exporter, list[Any]]:
    with Exporter(image, wanted, client=client, cache=Cache(cache_dir), **kw) as exp:
        blobs = list(exp.ready())
        assert "sha256:" + hashlib.sha256(exp.config()).hexdigest() == image.config_digest
    return exp, blobs


def test_store_export_is_in_image_order_and_equals_docker_save(ws: docker.DockerClient, image: ImageInfo,
                                                               tmp_path: Path) -> None:
    wanted = {"zstd": set(image.diff_ids), "gzip": {image.diff_ids[-1]}}
    store, blobs = _export(image, wanted, ws, tmp_path / "store")
    assert store.source == "store"
    order = [image.diff_ids.index(b.diff_id) for b in blobs]
    assert order == sorted(order) and sorted(set(order)) == list(range(len(image.diff_ids)))
    saved, save_blobs = _export(image, wanted, ws, tmp_path / "save", use_store=False)
    assert saved.source == "docker save"
    by_key = {(b.codec, b.diff_id): b for b in save_blobs}
    assert set(by_key) == {(b.codec, b.diff_id) for b in blobs}
    for blob in blobs:
        raw = _inflate(blob.codec, blob.path.read_bytes())
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == blob.diff_id and len(raw) == blob.raw_size
        assert raw == _inflate(blob.codec, by_key[(blob.codec, blob.diff_id)].path.read_bytes())


def _vfs_client(testbed: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> docker.DockerClient:
    client = docker.DockerClient(base_url=testbed.ws_docker_host, timeout=120)
    real = client.info()
    # another graph driver: neither the overlay2 store nor the containerd content store is read
    monkeypatch.setattr(client, "info", lambda: {**real, "Driver": "vfs", "DriverStatus": []})
    return client


def _empty_root_client(testbed: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> docker.DockerClient:
    client = docker.DockerClient(base_url=testbed.ws_docker_host, timeout=120)
    real = client.info()
    (tmp_path / "empty-root").mkdir()
    monkeypatch.setattr(client, "info", lambda: {**real, "DockerRootDir": str(tmp_path / "empty-root")})
    return client


@pytest.mark.parametrize("unusable", [_vfs_client, _empty_root_client], ids=["other-driver", "empty-root"])
def test_unusable_store_falls_back_to_docker_save(testbed: Any, image: ImageInfo, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch, unusable: Any) -> None:
    client = unusable(testbed, monkeypatch, tmp_path)
    assert LayerStore.open(client, image) is None
    exp, blobs = _export(image, {"zstd": set(image.diff_ids[1:])}, client, tmp_path / "c")
    assert exp.source == "docker save"
    assert sorted(b.diff_id for b in blobs) == sorted(image.diff_ids[1:])
    for blob in blobs:
        assert "sha256:" + hashlib.sha256(_inflate("zstd", blob.path.read_bytes())).hexdigest() == blob.diff_id


def test_store_failing_mid_image_hands_the_rest_to_docker_save(ws: docker.DockerClient, image: ImageInfo,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deployer.local.content import ContentStore

    def failing_from_layer_3(real: Any) -> Any:
        def failing(self: Any, index: int) -> Iterator[bytes]:
            if index >= 2:
                raise StoreError(f"layer {index}: simulated I/O error")
            return real(self, index)
        return failing

    for store in (LayerStore, ContentStore):  # the workstation's store, whichever it is
        monkeypatch.setattr(store, "open_layer", failing_from_layer_3(store.open_layer))
    exp, blobs = _export(image, {"gzip": set(image.diff_ids)}, ws, tmp_path / "c")
    assert exp.source == "docker save" and exp.exported_blobs == len(image.diff_ids)
    assert [b.diff_id for b in blobs[:2]] == list(image.diff_ids[:2])  # from the store, before it failed
    assert sorted(b.diff_id for b in blobs) == sorted(image.diff_ids)
    for blob in blobs:
        assert "sha256:" + hashlib.sha256(gzip.decompress(blob.path.read_bytes())).hexdigest() == blob.diff_id


MEMORY_PROBE = """
import resource, sys, docker
from deployer.local.cache import Cache
from deployer.local.export import Exporter
from deployer.local.image import inspect
client = docker.DockerClient(base_url=sys.argv[1], timeout=600)
image = inspect(sys.argv[2], client)
with Exporter(image, {"zstd": set(image.diff_ids), "gzip": {image.diff_ids[-1]}}, client=client,
              cache=Cache(sys.argv[3])) as exp:
    total = sum(b.size for b in exp.ready())
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, total)
"""


def test_export_memory_stays_small_for_a_300mb_image(testbed: Any, ws: docker.DockerClient, tmp_path: Path) -> None:
    tag = f"deployer-test/big:{uuid.uuid4().hex[:10]}"
    build(ws, tag, [200_000_000, 100_000_000])
    try:
        proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, testbed.ws_docker_host, tag, str(tmp_path)],
                              capture_output=True, text=True, timeout=300, env={**os.environ}, check=False)
        assert proc.returncode == 0, proc.stderr
        peak, compressed = map(int, proc.stdout.split())
        assert compressed > 300_000_000  # random data: every layer really went through both codecs
        assert peak < 200 * 1024 * 1024, f"peak RSS {peak / 1e6:.0f} MB"
    finally:
        remove(ws, tag)
