"""The overlay2 layer-store reader on a fake store built by hand in tmp_path, and the Exporter's
store mode (image order, fallback to docker save, cancellation) on it.

Against the real testbed daemon it is tested in tests/integration/test_export.py.
"""
from __future__ import annotations

import base64
import gzip
import io
import json
import os
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from test_local_savestream import FakeAPI, image, save_legacy, sha

from deployer.chain import chain_ids
from deployer.errors import LocalError
from deployer.local import store as store_mod
from deployer.local.cache import Cache
from deployer.local.export import Exporter
from deployer.local.store import (
    CHUNK,
    FileEntry,
    LayerStore,
    Segment,
    StoreError,
    parse_entry,
    safe_name,
)

# ---- a fake store --------------------------------------------------------------------------------


def make_tar(files: dict[str, bytes], extra: int = 0) -> bytes:
    """A layer tar (GNU format, so a non-UTF-8 name stays raw bytes) with a dir, a symlink and files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, errors="surrogateescape") as tar:
        d = tarfile.TarInfo("etc")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(d)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000 + extra
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("etc/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/hosts"
        tar.addfile(link)
    return buf.getvalue()


def tar_split_lines(raw: bytes) -> list[dict[str, Any]]:
    """What the daemon's tar-split records for raw: verbatim segments around each member's content."""
    lines: list[dict[str, Any]] = []
    pos = 0
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r", errors="surrogateescape") as tar:
        for m in tar.getmembers():
            lines.append({"type": 2, "payload": base64.b64encode(raw[pos : m.offset_data]).decode()})
            name = os.fsencode(m.name)
            entry: dict[str, Any] = {"type": 1, "size": m.size}
            try:
                entry["name"] = name.decode()
            except UnicodeDecodeError:
                entry["name_raw"] = base64.b64encode(name).decode()
            lines.append(entry)
            pos = m.offset_data + m.size
    lines.append({"type": 2, "payload": base64.b64encode(raw[pos:]).decode()})
    return lines


class FakeStore:
    """A Docker root dir holding one image: imagedb config, layerdb entries, overlay2 diff dirs."""

    def __init__(self, root: Path, layers: list[bytes]) -> None:
        self.root, self.layers = root, layers
        self.info, self.config = image(layers)
        (root / "image/overlay2/imagedb/content/sha256").mkdir(parents=True)
        (root / "image/overlay2/imagedb/content/sha256" / self.info.id_hex).write_bytes(self.config)
        for i, (raw, _chain) in enumerate(zip(layers, chain_ids(self.info.diff_ids))):
            layer = self.layer_dir(i)
            layer.mkdir(parents=True)
            (layer / "cache-id").write_text(f"cache{i}")
            (layer / "diff").write_text(self.info.diff_ids[i])
            self.write_split(i, tar_split_lines(raw))
            diff = self.diff_dir(i)
            diff.mkdir(parents=True)
            with tarfile.open(fileobj=io.BytesIO(raw), errors="surrogateescape") as tar:
                for m in tar.getmembers():
                    if m.isfile():
                        target = os.path.join(os.fsencode(diff), os.fsencode(m.name))
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        with open(target, "wb") as fh:
                            fh.write(tar.extractfile(m).read())  # type: ignore[union-attr]

    def layer_dir(self, i: int) -> Path:
        return self.root / "image/overlay2/layerdb/sha256" / chain_ids(self.info.diff_ids)[i].split(":")[1]

    def diff_dir(self, i: int) -> Path:
        return self.root / "overlay2" / f"cache{i}" / "diff"

    def write_split(self, i: int, lines: list[dict[str, Any]]) -> None:
        with gzip.open(self.layer_dir(i) / "tar-split.json.gz", "wt") as fh:
            fh.writelines(json.dumps(line) + "\n" for line in lines)


class StoreClient:
    """A client whose daemon is the fake store; `docker save` (the fallback) streams the same image."""

    def __init__(self, fake: FakeStore, info: dict[str, Any] | None = None) -> None:
        self._info = info if info is not None else {
            "Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]], "DockerRootDir": str(fake.root)}
        self.api = FakeAPI(save_legacy(fake.info, fake.config, fake.layers))

    def info(self) -> dict[str, Any]:
        return self._info


BIG = os.urandom(3 * CHUNK + 12_345)


@pytest.fixture
def fake(tmp_path: Path) -> FakeStore:
    layers = [
        make_tar({"etc/hosts": b"127.0.0.1 localhost\n", "caf\udce9": b"latin-1 name"}),
        make_tar({"data/big.bin": BIG, "data/empty": b""}, extra=1),
        make_tar({"app/run.sh": b"#!/bin/sh\necho hi\n" * 50}, extra=2),
    ]
    return FakeStore(tmp_path / "docker", layers)


def _store(fake: FakeStore) -> LayerStore:
    store = LayerStore.open(StoreClient(fake), fake.info)
    assert store is not None
    return store


# ---- pure helpers ---------------------------------------------------------------------------------


def test_parse_entry_segments_and_files() -> None:
    assert parse_entry('{"type":2,"payload":"aGVsbG8="}') == Segment(b"hello")
    assert parse_entry(b'{"type":2}') is None
    assert parse_entry('{"type":1,"name":"./usr/bin/x","size":7,"payload":"AAAAAAAAAAA="}') == FileEntry(b"usr/bin/x", 7)
    raw = base64.b64encode(b"caf\xe9").decode()
    assert parse_entry(json.dumps({"type": 1, "name_raw": raw, "size": 3})) == FileEntry(b"caf\xe9", 3)
    assert parse_entry('{"type":1,"name":"etc/","size":0}') is None  # dirs, links: header only


@pytest.mark.parametrize("line", ['{"type":2,"payload":"!!"}', '{"type":1,"name":"a","size":-1}', "not json",
                                  '{"payload":"aGk="}', '[1]', '{"type":3}'])
def test_parse_entry_refuses_malformed_lines(line: str) -> None:
    with pytest.raises(StoreError):
        parse_entry(line)


@pytest.mark.parametrize("name", [b"/etc/passwd", b"../x", b"a/../../b", b"a/..", b"", b".", b"a\0b"])
def test_unsafe_names_are_refused(name: bytes) -> None:
    with pytest.raises(StoreError, match="unsafe"):
        safe_name(name)
    if name:
        line = json.dumps({"type": 1, "name_raw": base64.b64encode(name).decode(), "size": 1})
        with pytest.raises(StoreError):
            parse_entry(line)


def test_safe_names_are_normalised() -> None:
    assert safe_name(b"./a//b/./c") == b"a/b/c"
    assert safe_name(b"..a/b..") == b"..a/b.."  # only a whole `..` component escapes


def test_unusable_reason() -> None:
    ok = {"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]], "DockerRootDir": "/var/lib/docker"}
    assert store_mod.unusable_reason(ok) is None
    assert "vfs" in str(store_mod.unusable_reason({**ok, "Driver": "vfs"}))
    containerd = {**ok, "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}
    assert "containerd" in str(store_mod.unusable_reason(containerd))
    assert store_mod.unusable_reason({**ok, "DockerRootDir": ""}) is not None


# ---- reassembly ------------------------------------------------------------------------------------


def test_layers_reassemble_byte_for_byte(fake: FakeStore) -> None:
    store = _store(fake)
    assert store.config() == fake.config
    for i, raw in enumerate(fake.layers):
        chunks = list(store.open_layer(i))
        assert b"".join(chunks) == raw and sha(b"".join(chunks)) == fake.info.diff_ids[i]
        assert store.layer_size(i) == len(raw)
        assert all(len(c) < 2 * CHUNK for c in chunks)  # streamed, never the whole layer
    assert len(list(store.open_layer(1))) >= 3


def test_unsafe_name_in_tar_split_is_an_error(fake: FakeStore) -> None:
    lines = tar_split_lines(fake.layers[0])
    lines[1] = {"type": 1, "name": "../../../../etc/hostname", "size": 5}
    fake.write_split(0, lines)
    with pytest.raises(StoreError, match="unsafe"):
        b"".join(_store(fake).open_layer(0))


def test_short_file_is_an_error(fake: FakeStore) -> None:
    (fake.diff_dir(1) / "data/big.bin").write_bytes(BIG[:-1])
    with pytest.raises(StoreError, match="is 3158072 bytes, the layer says 3158073"):
        b"".join(_store(fake).open_layer(1))


def test_missing_file_and_symlinked_file_are_errors(fake: FakeStore) -> None:
    (fake.diff_dir(2) / "app/run.sh").unlink()
    with pytest.raises(StoreError, match="cannot be read"):
        b"".join(_store(fake).open_layer(2))
    (fake.diff_dir(2) / "app/run.sh").symlink_to("/etc/hostname")
    with pytest.raises(StoreError, match="cannot be read"):
        b"".join(_store(fake).open_layer(2))


def test_layerdb_entry_for_another_layer_is_an_error(fake: FakeStore) -> None:
    (fake.layer_dir(1) / "diff").write_text(fake.info.diff_ids[0])
    with pytest.raises(StoreError, match="holds"):
        list(_store(fake).open_layer(1))


# ---- LayerStore.open: when not to use the store ----------------------------------------------------


def test_wrong_config_hash_is_not_our_store(fake: FakeStore) -> None:
    (fake.root / "image/overlay2/imagedb/content/sha256" / fake.info.id_hex).write_bytes(b"{}")
    assert LayerStore.open(StoreClient(fake), fake.info) is None


def test_missing_image_or_root_is_not_usable(fake: FakeStore, tmp_path: Path) -> None:
    other, _ = image([make_tar({"x": b"y"})])
    assert LayerStore.open(StoreClient(fake), other) is None
    elsewhere = {"Driver": "overlay2", "DriverStatus": [], "DockerRootDir": str(tmp_path / "nowhere")}
    assert LayerStore.open(StoreClient(fake, elsewhere), fake.info) is None


@pytest.mark.parametrize("info", [
    {"Driver": "overlayfs", "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]},
    {"Driver": "overlay2", "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]},
    {"Driver": "btrfs", "DriverStatus": []},
])
def test_other_drivers_and_the_containerd_store_are_not_used(fake: FakeStore, info: dict[str, Any],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    assert LayerStore.open(StoreClient(fake, {**info, "DockerRootDir": str(fake.root)}), fake.info) is None
    assert "not from the layer store" in caplog.text


def test_a_client_whose_info_fails_is_not_used(fake: FakeStore) -> None:
    class Broken:
        def info(self) -> dict[str, Any]:
            raise ConnectionError("daemon gone")

    assert LayerStore.open(Broken(), fake.info) is None
    assert LayerStore.open(object(), fake.info) is None  # type: ignore[arg-type]


# ---- the Exporter in store mode ----------------------------------------------------------------------


def _raw(codec: str, data: bytes) -> bytes:
    return gzip.decompress(data) if codec == "gzip" else zstandard.ZstdDecompressor().decompressobj().decompress(data)


def test_exporter_reads_the_store_in_image_order(fake: FakeStore, tmp_path: Path) -> None:
    client = StoreClient(fake)
    d = fake.info.diff_ids
    wanted = {"zstd": set(d), "gzip": {d[1]}}
    with Exporter(fake.info, wanted, client=client, cache=Cache(tmp_path / "c")) as exp:  # type: ignore[arg-type]
        blobs = list(exp.ready())
        assert exp.config() == fake.config
    assert exp.source == "store" and client.api.calls == []  # no docker save at all
    assert [b.diff_id for b in blobs] == [d[0], d[1], d[1], d[2]]
    for blob in blobs:
        assert sha(_raw(blob.codec, blob.path.read_bytes())) == blob.diff_id
    assert exp.bytes_read == sum(map(len, fake.layers)) and exp.exported_blobs == 4
    assert Cache(tmp_path / "c").get_config(fake.info.id) == fake.config


def test_exporter_falls_back_to_docker_save_for_what_the_store_lacks(fake: FakeStore, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    big = fake.diff_dir(1) / "data/big.bin"
    big.write_bytes(b"\0" * len(BIG))  # same size, other bytes: only the hash can tell
    client = StoreClient(fake)
    d = fake.info.diff_ids
    with Exporter(fake.info, {"zstd": set(d)}, client=client, cache=Cache(tmp_path / "c")) as exp:  # type: ignore[arg-type]
        blobs = list(exp.ready())
    assert exp.source == "docker save" and client.api.calls == [fake.info.id]
    assert blobs[0].diff_id == d[0]  # the store gave layer 0 before layer 1 failed
    assert sorted(b.diff_id for b in blobs) == sorted(d)
    for blob in blobs:
        assert sha(_raw("zstd", blob.path.read_bytes())) == blob.diff_id
    assert "hashes to" in caplog.text and "using docker save" in caplog.text
    assert [p for p in (tmp_path / "c/sha256").iterdir() if p.name.startswith(".tmp")] == []


def test_exporter_uses_docker_save_when_the_store_is_unusable(fake: FakeStore, tmp_path: Path) -> None:
    client = StoreClient(fake, {"Driver": "vfs", "DockerRootDir": str(fake.root)})
    exp = Exporter(fake.info, {"gzip": set(fake.info.diff_ids)}, client=client, cache=Cache(tmp_path / "c"))  # type: ignore[arg-type]
    exp.start().wait(timeout=10)
    assert exp.source == "docker save" and client.api.calls == [fake.info.id]
    off = Exporter(fake.info, {"zstd": {fake.info.diff_ids[0]}}, client=StoreClient(fake), cache=Cache(tmp_path / "d"),  # type: ignore[arg-type]
                   use_store=False)
    off.start().wait(timeout=10)
    assert off.source == "docker save"


def test_close_stops_a_store_export_promptly(fake: FakeStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = threading.Event()

    def endless(self: LayerStore, index: int) -> Iterator[bytes]:
        started.set()
        while True:
            time.sleep(0.001)
            yield b"\0" * 4096

    monkeypatch.setattr(LayerStore, "open_layer", endless)
    exp = Exporter(fake.info, {"zstd": set(fake.info.diff_ids)}, client=StoreClient(fake), cache=Cache(tmp_path / "c"))  # type: ignore[arg-type]
    exp.start()
    assert started.wait(10)
    t0 = time.monotonic()
    exp.close()
    assert time.monotonic() - t0 < 2 and exp.done
    with pytest.raises(LocalError, match="cancelled"):
        exp.wait()


def test_narrow_drops_the_layer_being_compressed_when_no_one_needs_it(
        fake: FakeStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = threading.Event()
    real = LayerStore.open_layer

    def slow_first(self: LayerStore, index: int) -> Iterator[bytes]:
        if index == 0:  # a huge base layer that the host turns out to have, still being read
            started.set()
            yield next(iter(real(self, index)))[:1]
            while True:  # its read stalls: never past the layer's size, which the compressor was promised
                time.sleep(0.001)
                yield b""
        yield from real(self, index)

    monkeypatch.setattr(LayerStore, "open_layer", slow_first)
    d = fake.info.diff_ids
    exp = Exporter(fake.info, {"zstd": set(d)}, client=StoreClient(fake), cache=Cache(tmp_path / "c"))  # type: ignore[arg-type]
    exp.start()
    assert started.wait(10)
    assert exp.narrow("zstd", {d[-1]})  # the plan: only the top layer is missing
    assert exp.blob(d[-1], "zstd", timeout=10).diff_id == d[-1]
    exp.wait(timeout=10)
    assert [b.diff_id for b in exp.ready()] == [d[-1]]
    assert [p for p in (tmp_path / "c/sha256").iterdir() if p.name.startswith(".tmp")] == []


def test_narrow_keeps_made_blobs_takes_cached_ones_and_refuses_what_it_cannot_give(tmp_path: Path) -> None:
    from deployer.local.cache import Cache
    from deployer.local.export import Exporter
    from deployer.local.image import ImageInfo

    diffs = ("sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64)
    image = ImageInfo("t:v", "sha256:" + "f" * 64, diffs, 3, "linux", "amd64", ())
    cache = Cache(tmp_path / "cache")
    writer = cache.writer(diffs[2], "zstd", 3)
    writer.write(b"compressed c")
    cached = writer.commit(100, diff_id=diffs[2])
    exporter = Exporter(image, {"zstd": {diffs[0], diffs[1]}}, cache=cache)  # not started: no thread
    assert exporter.narrow("zstd", {diffs[0], diffs[2]})
    assert exporter.wanted == {"zstd": frozenset({diffs[0], diffs[2]})}
    assert exporter.blob(diffs[2], "zstd", timeout=1) == cached  # from the cache, now among its blobs
    assert not exporter.narrow("zstd", {diffs[1]})  # dropped above and not cached: cannot give it
    assert exporter.wanted == {"zstd": frozenset({diffs[0], diffs[2]})}  # unchanged
