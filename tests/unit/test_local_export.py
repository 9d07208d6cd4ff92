"""The Exporter's stream parsing and caching, on synthetic save streams (both layouts).

Against a real daemon it is tested in tests/integration/test_export.py.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from test_local_savestream import (
    FakeClient,
    image,
    layer_tar,
    save_legacy,
    save_oci,
    sha,
)

from deployer.errors import LocalError
from deployer.local.cache import Cache
from deployer.local.export import Exporter, Growing, _Hasher


def _decompress(codec: str, data: bytes) -> bytes:
    if codec == "gzip":
        return gzip.decompress(data)
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


LAYERS = [layer_tar(i) for i in range(3)]
INFO, CONFIG = image(LAYERS)
D = INFO.diff_ids


@pytest.mark.parametrize("layout", ["legacy", "legacy-opaque", "oci", "oci-compressed"])
def test_export_both_codecs_in_one_pass(tmp_path: Path, layout: str) -> None:
    stream = {
        "legacy": lambda: save_legacy(INFO, CONFIG, LAYERS),
        "legacy-opaque": lambda: save_legacy(INFO, CONFIG, LAYERS, identifiable=False),
        "oci": lambda: save_oci(INFO, CONFIG, LAYERS),
        "oci-compressed": lambda: save_oci(INFO, CONFIG, LAYERS, compressed=True),
    }[layout]()
    client = FakeClient(stream)
    cache = Cache(tmp_path)
    wanted = {"zstd": {D[1], D[2]}, "gzip": {D[2]}}
    with Exporter(INFO, wanted, level=3, client=client, cache=cache) as exp:  # type: ignore[arg-type]
        got = {(b.codec, b.diff_id): b for b in exp.ready()}
        assert exp.config() == CONFIG
    assert set(got) == {("zstd", D[1]), ("zstd", D[2]), ("gzip", D[2])}
    for (codec, diff_id), blob in got.items():
        data = blob.path.read_bytes()
        assert sha(data) == blob.digest and len(data) == blob.size
        raw = _decompress(codec, data)
        assert sha(raw) == diff_id and len(raw) == blob.raw_size
    assert client.api.calls == [INFO.id]
    assert cache.lookup(D[0], "zstd", 3) is None  # unwanted layers are not compressed


def test_second_export_is_served_from_the_cache(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    wanted = {"zstd": set(D)}
    first = Exporter(INFO, wanted, client=FakeClient(save_legacy(INFO, CONFIG, LAYERS)), cache=cache)  # type: ignore[arg-type]
    first.start().wait()
    assert first.exported_blobs == 3
    idle = FakeClient(b"")
    second = Exporter(INFO, wanted, client=idle, cache=cache).start()  # type: ignore[arg-type]
    assert second.done and idle.api.calls == []
    assert [second.blob(d, "zstd") for d in D] == [first.blob(d, "zstd") for d in D]
    assert second.config() == CONFIG


def test_blobs_come_lowest_layer_first(tmp_path: Path) -> None:
    # the host registers layers bottom-up as they land: cached blobs must not go out in set order
    layers = [layer_tar(10 + i, size=20_000) for i in range(8)]
    info, config = image(layers)
    d = info.diff_ids
    cache = Cache(tmp_path)
    Exporter(info, {"zstd": set(d[1:])}, client=FakeClient(save_legacy(info, config, layers)),  # type: ignore[arg-type]
             cache=cache).start().wait()
    whole = Exporter(info, {"zstd": set(d[1:])}, client=FakeClient(b""), cache=cache).start()  # type: ignore[arg-type]
    assert [b.diff_id for b in whole.ready()] == list(d[1:])  # all cached: image order
    # layer 0 is exported while 1-7 come from the cache: each, when taken, is the lowest ready
    mixed = Exporter(info, {"zstd": set(d)}, client=FakeClient(save_legacy(info, config, layers)), cache=cache)  # type: ignore[arg-type]
    assert mixed.unmade("zstd") == set(d) and mixed.unmade("gzip") == set()
    got = [b.diff_id for b in mixed.start().ready()]
    assert sorted(got) == sorted(d) and [x for x in got if x != d[0]] == list(d[1:])
    assert mixed.unmade("zstd") == set()


def test_config_only(tmp_path: Path) -> None:
    exp = Exporter(INFO, {}, client=FakeClient(save_legacy(INFO, CONFIG, LAYERS)), cache=Cache(tmp_path))  # type: ignore[arg-type]
    assert exp.start().config(timeout=10) == CONFIG
    assert list(exp.ready()) == []


def test_layer_that_does_not_hash_to_its_diff_id_fails(tmp_path: Path) -> None:
    bad = [LAYERS[0], layer_tar(99), LAYERS[2]]
    exp = Exporter(INFO, {"zstd": {D[1]}}, client=FakeClient(save_legacy(INFO, CONFIG, bad)), cache=Cache(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(LocalError, match="hashes to"):
        exp.start().blob(D[1], "zstd", timeout=10)
    assert [p for p in (tmp_path / "sha256").iterdir() if p.name.startswith(".tmp")] == []


def test_the_layer_hash_on_its_own_thread_is_sha256_of_every_chunk_in_order() -> None:
    chunks = [os.urandom(n) for n in (1, 4096, 1 << 20, 0, 77)] * 5  # more than its queue holds
    h = _Hasher()
    for c in chunks:
        h.update(c)
    want = hashlib.sha256(b"".join(chunks)).hexdigest()
    assert h.hexdigest() == want and h.hexdigest() == want  # asked twice: the thread ended once
    assert not h._thread.is_alive()


def test_missing_layer_in_stream_fails(tmp_path: Path) -> None:
    stream = save_legacy(INFO, CONFIG, LAYERS, skip=frozenset({2}))
    exp = Exporter(INFO, {"gzip": {D[2]}}, client=FakeClient(stream), cache=Cache(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(LocalError, match="did not contain"):
        exp.start().blob(D[2], "gzip", timeout=10)
    with pytest.raises(LocalError):
        list(exp.ready())


def test_wrong_config_fails(tmp_path: Path) -> None:
    exp = Exporter(INFO, {"zstd": {D[0]}}, client=FakeClient(save_legacy(INFO, b"{}", LAYERS)), cache=Cache(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(LocalError, match="config does not hash"):
        exp.start().config(timeout=10)


def test_rejects_foreign_layers_and_codecs(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Exporter(INFO, {"zstd": {sha(b"other")}}, cache=Cache(tmp_path))
    with pytest.raises(ValueError):
        Exporter(INFO, {"lz4": {D[0]}}, cache=Cache(tmp_path))


def test_unrequested_blob_is_a_programming_error(tmp_path: Path) -> None:
    exp = Exporter(INFO, {"zstd": {D[0]}}, client=FakeClient(save_legacy(INFO, CONFIG, LAYERS)), cache=Cache(tmp_path))  # type: ignore[arg-type]
    exp.start().wait()
    with pytest.raises(ValueError):
        exp.blob(D[1], "zstd")


def test_broken_stream_is_a_local_error(tmp_path: Path) -> None:
    stream = save_legacy(INFO, CONFIG, LAYERS)[:300_000]  # daemon died mid-save
    exp = Exporter(INFO, {"zstd": set(D)}, client=FakeClient(stream), cache=Cache(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(LocalError):
        exp.start().wait(timeout=10)


def test_legacy_layers_are_identified_before_their_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With v1 ids recognised, nothing is spooled to disk and unwanted layers are not read."""
    cache = Cache(tmp_path)
    spooled: list[str] = []
    real_writer = cache.writer

    def writer(diff_id: str, codec: str, level: int):  # type: ignore[no-untyped-def]
        spooled.append(codec)
        return real_writer(diff_id, codec, level)

    monkeypatch.setattr(cache, "writer", writer)
    exp = Exporter(INFO, {"zstd": {D[0]}}, client=FakeClient(save_legacy(INFO, CONFIG, LAYERS)), cache=cache)  # type: ignore[arg-type]
    exp.start().wait(timeout=10)
    assert spooled == ["zstd"]
    opaque = Exporter(INFO, {"gzip": {D[0]}}, client=FakeClient(save_legacy(INFO, CONFIG, LAYERS, identifiable=False)), cache=cache)  # type: ignore[arg-type]
    opaque.start().wait(timeout=10)
    assert "spool" in spooled
    assert [p for p in (tmp_path / "sha256").iterdir() if p.name.startswith(".tmp")] == []


def _random_layer(size: int) -> bytes:
    """A layer that does not compress: the compressor writes its output as it goes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("weights.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return buf.getvalue()


class _GatedAPI:
    """A save stream that stops at STOP (inside the layer) until the gate opens."""

    def __init__(self, stream: bytes, stop: int) -> None:
        self.stream, self.stop, self.gate = stream, stop, threading.Event()

    def get_image(self, image_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        yield self.stream[: self.stop]
        self.gate.wait(30)
        yield self.stream[self.stop :]


class _GatedClient:
    def __init__(self, stream: bytes, stop: int) -> None:
        self.api = _GatedAPI(stream, stop)


def test_a_blob_is_followed_while_it_is_compressed(tmp_path: Path) -> None:
    layers = [_random_layer(3 << 20)]
    info, config = image(layers)
    stream = save_legacy(info, config, layers)
    client = _GatedClient(stream, len(stream) // 2)
    exp = Exporter(info, {"zstd": set(info.diff_ids)}, client=client, cache=Cache(tmp_path)).start()  # type: ignore[arg-type]
    threading.Timer(20, client.api.gate.set).start()  # never a hang, should the test fail
    item = exp.next_blob("zstd", info.diff_ids, set(), stream=True)
    assert isinstance(item, Growing) and item.diff_id == info.diff_ids[0]
    chunks = exp.follow(item)
    head = next(chunks)  # what the compressor wrote before the rest of the layer was read
    assert head and item.blob is None
    client.api.gate.set()
    data = head + b"".join(chunks)
    blob = exp.finished(item)
    assert data == blob.path.read_bytes() and len(data) == blob.size
    assert exp.next_blob("zstd", info.diff_ids, {item.diff_id}, stream=True) is None


def test_following_a_blob_that_is_given_up_fails(tmp_path: Path) -> None:
    layers = [_random_layer(3 << 20)]
    info, config = image(layers)
    stream = save_legacy(info, config, [_random_layer(3 << 20)])  # not the layer the image names
    client = _GatedClient(stream, len(stream) // 2)
    exp = Exporter(info, {"zstd": set(info.diff_ids)}, client=client, cache=Cache(tmp_path)).start()  # type: ignore[arg-type]
    threading.Timer(20, client.api.gate.set).start()
    item = exp.next_blob("zstd", info.diff_ids, set(), stream=True)
    assert isinstance(item, Growing)
    chunks = exp.follow(item)
    next(chunks)
    client.api.gate.set()
    with pytest.raises(LocalError, match="hashes to"):
        b"".join(chunks)
    with pytest.raises(LocalError, match="hashes to"):
        exp.finished(item)


def test_wait_blob_gives_a_blob_made_in_time_none_while_it_is_still_made_and_the_exports_error(
        tmp_path: Path) -> None:
    idle = Exporter(INFO, {"zstd": {D[1]}}, client=FakeClient(save_legacy(INFO, CONFIG, LAYERS)),  # type: ignore[arg-type]
                    cache=Cache(tmp_path / "idle"))
    assert idle.wait_blob(D[1], "zstd", 0.05) is None  # not made yet (the export was not even started)
    with Exporter(INFO, {"zstd": {D[1]}}, client=FakeClient(save_legacy(INFO, CONFIG, LAYERS)),  # type: ignore[arg-type]
                  cache=Cache(tmp_path / "ok")) as exp:
        got = exp.wait_blob(D[1], "zstd", 10)
        assert got is not None and got.diff_id == D[1] and got == exp.blob(D[1], "zstd")
    bad = [LAYERS[0], layer_tar(99), LAYERS[2]]
    failing = Exporter(INFO, {"zstd": {D[1]}}, client=FakeClient(save_legacy(INFO, CONFIG, bad)),  # type: ignore[arg-type]
                       cache=Cache(tmp_path / "bad"))
    with pytest.raises(LocalError, match="hashes to"):
        failing.start().wait_blob(D[1], "zstd", 10)
