"""The containerd image store on the workstation: from an image id (index or manifest digest) to its
config and layers, through a content store laid out on disk as containerd keeps it."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from test_local_savestream import FakeAPI, save_oci

from deployer.local.cache import Cache
from deployer.local.content import ContentStore, config_digest, content_roots, from_content_store, pick_manifest
from deployer.local.export import Exporter
from deployer.local.image import ImageInfo
from deployer.tarfmt import digest_of


def layer(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Store:
    """A DockerRootDir whose dockerd-managed containerd holds one BuildKit-style image: an index
    with the image manifest and an attestation manifest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "containerd/daemon/io.containerd.content.v1.content/blobs/sha256"
        self.blobs.mkdir(parents=True)
        self.layers = [layer("a", b"x" * 5000), layer("b", b"y" * 300)]
        self.diff_ids = [digest_of(x) for x in self.layers]
        self.config = json.dumps({"architecture": "amd64", "os": "linux",
                                  "rootfs": {"type": "layers", "diff_ids": self.diff_ids}}).encode()
        gz = gzip.compress(self.layers[0], mtime=0)
        descs = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": self.put(gz), "size": len(gz)},
                 {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": self.put(self.layers[1]),
                  "size": len(self.layers[1])}]
        manifest = self.put_json({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                  "config": {"digest": self.put(self.config), "size": len(self.config)},
                                  "layers": descs})
        attestation_config = self.put_json({"architecture": "unknown", "os": "unknown",
                                            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}})
        attestation = self.put_json({"schemaVersion": 2, "config": {"digest": attestation_config}, "layers": []})
        self.index = self.put_json({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                    "manifests": [
            {"digest": attestation, "platform": {"os": "unknown", "architecture": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
            {"digest": manifest, "platform": {"os": "linux", "architecture": "amd64"}}]})
        self.image = ImageInfo("app:1", self.index, tuple(self.diff_ids), 0, "linux", "amd64", ("app:1",),
                               config_digest=digest_of(self.config))

    def put(self, data: bytes) -> str:
        digest = digest_of(data)
        (self.blobs / digest[7:]).write_bytes(data)
        return digest

    def put_json(self, doc: dict[str, Any]) -> str:
        return self.put(json.dumps(doc).encode())


class Client:
    def __init__(self, root: Path) -> None:
        self.root = root

    def info(self) -> dict[str, str]:
        return {"DockerRootDir": str(self.root), "Driver": "overlayfs"}


def test_pick_manifest_skips_attestations_and_other_platforms() -> None:
    index = {"manifests": [
        {"digest": "sha256:att", "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
        {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}}]}
    assert pick_manifest(index, "linux", "amd64") == "sha256:amd"
    assert pick_manifest(index, "linux", "arm64") == "sha256:arm"
    assert pick_manifest(index, "linux", "s390x") is None


def test_config_and_layers_from_the_content_store(tmp_path: Path) -> None:
    store = Store(tmp_path)
    client = Client(tmp_path)
    assert content_roots(client.info())[0] == store.blobs
    assert from_content_store(client.info(), store.image) == store.config
    opened = ContentStore.open(client, store.image)
    assert opened is not None and opened.config() == store.config
    for i, raw in enumerate(store.layers):  # gzip and plain blobs both come out as the layer tar
        assert b"".join(opened.open_layer(i)) == raw
        assert "sha256:" + hashlib.sha256(b"".join(opened.open_layer(i))).hexdigest() == store.diff_ids[i]


def test_a_tampered_blob_is_not_trusted(tmp_path: Path) -> None:
    store = Store(tmp_path)
    (store.blobs / store.image.config_digest[7:]).write_bytes(b'{"rootfs": {}}')
    assert from_content_store(Client(tmp_path).info(), store.image) is None
    assert ContentStore.open(Client(tmp_path), store.image) is None


def test_config_digest_is_found_once_and_remembered(tmp_path: Path) -> None:
    store = Store(tmp_path / "docker")
    cache = Cache(tmp_path / "cache")
    assert config_digest(Client(tmp_path / "docker"), store.image, cache) == store.image.config_digest
    for blob in store.blobs.iterdir():
        blob.unlink()  # the store is gone: the cache answers
    assert config_digest(Client(tmp_path / "docker"), store.image, cache) == store.image.config_digest
    assert cache.get_config(store.image.config_digest) == store.config


class ContainerdClient(Client):
    """A containerd-store workstation whose docker save also answers, from the same layers."""

    def __init__(self, root: Path, save: bytes) -> None:
        super().__init__(root)
        self.api = FakeAPI(save)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}


def test_a_layer_compresses_to_the_same_blob_from_the_content_store_and_from_docker_save(tmp_path: Path) -> None:
    # A resumed ship sends the tail of the blob a killed ship left on the host: its bytes must not
    # depend on where the export read the layer (the content store does not know its size, docker
    # save does; a zstd frame that names a size is another blob).
    store = Store(tmp_path / "docker")
    wanted = {"zstd": set(store.diff_ids), "gzip": set(store.diff_ids)}
    as_saved = dataclasses.replace(store.image, id=store.image.config_digest)  # the save names the config by digest
    client = ContainerdClient(tmp_path / "docker", save_oci(as_saved, store.config, store.layers, compressed=True))
    blobs = {}
    for use_store in (True, False):
        with Exporter(store.image, wanted, level=3, client=client, cache=Cache(tmp_path / f"cache-{use_store}"),  # type: ignore[arg-type]
                      use_store=use_store) as exp:
            blobs[use_store] = {(b.codec, b.diff_id): b.digest for b in exp.ready()}
            assert exp.source == ("store" if use_store else "docker save")
    assert len(blobs[True]) == 4 and blobs[True] == blobs[False]
