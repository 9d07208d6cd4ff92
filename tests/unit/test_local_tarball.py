from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard
from test_local_savestream import image, layer_tar, sha

from deployer.local.cache import Blob, Cache
from deployer.local.compress import compressor
from deployer.local.tarball import (
    Part,
    iter_parts,
    layer_path,
    load_stream_parts,
    load_tags,
    manifest_json,
    normalize_tag,
    write_parts,
)

LAYERS = [layer_tar(i, size=70_000 + i * 333) for i in range(3)]
INFO, CONFIG = image(LAYERS, ref="example/app:v1")


def _blob(cache: Cache, codec: str, raw: bytes) -> Blob:
    w = cache.writer(sha(raw), codec, 3)
    c = compressor(codec, 3, w)
    c.write(raw)
    c.finish()
    return w.commit(len(raw))


def _decode(codec: str, data: bytes) -> bytes:
    if codec == "gzip":
        return gzip.decompress(data)  # multi-member
    return zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(data)


@pytest.mark.parametrize(
    ("ref", "tag"),
    [
        ("app", "app:latest"),
        ("app:v1", "app:v1"),
        ("reg.local:5000/team/app", "reg.local:5000/team/app:latest"),
        ("reg.local:5000/team/app:v2", "reg.local:5000/team/app:v2"),
        ("sha256:" + "a" * 64, None),
        ("a" * 12, None),
        ("app@sha256:" + "a" * 64, None),
    ],
)
def test_normalize_tag(ref: str, tag: str | None) -> None:
    assert normalize_tag(ref) == tag


def test_load_tags_falls_back_to_image_tags_for_an_id() -> None:
    assert load_tags("app", INFO) == ("app:latest",)
    assert load_tags(INFO.id, INFO) == ("example/app:v1",)


def test_manifest_lists_every_layer_in_order() -> None:
    manifest = json.loads(manifest_json(INFO, ["example/app:v1"]))
    assert manifest == [
        {
            "Config": f"{INFO.id_hex}.json",
            "RepoTags": ["example/app:v1"],
            "Layers": [f"{d.split(':')[1]}/layer.tar" for d in INFO.diff_ids],
        }
    ]
    assert json.loads(manifest_json(INFO, []))[0]["RepoTags"] is None


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
@pytest.mark.parametrize("subset", [(0, 1, 2), (2,), ()])
def test_parts_concatenate_to_a_loadable_tar(tmp_path: Path, codec: str, subset: tuple[int, ...]) -> None:
    cache = Cache(tmp_path)
    blobs = [_blob(cache, codec, LAYERS[i]) for i in subset]
    parts = load_stream_parts(INFO, CONFIG, ["example/app:v1"], blobs, codec)
    assert sum(p.blob is not None for p in parts) == len(subset)
    out = io.BytesIO()
    n = write_parts(parts, out)
    assert n == sum(p.size for p in parts) == len(out.getvalue())
    assert b"".join(iter_parts(parts, chunk_size=1000)) == out.getvalue()
    raw = _decode(codec, out.getvalue())
    files = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for m in tar:
            if m.isfile():
                f = tar.extractfile(m)
                assert f is not None
                files[m.name] = f.read()
    assert json.loads(files.pop("manifest.json")) == json.loads(manifest_json(INFO, ["example/app:v1"]))
    assert files.pop(f"{INFO.id_hex}.json") == CONFIG
    assert files == {layer_path(INFO.diff_ids[i]): LAYERS[i] for i in subset}


def test_blobs_are_used_verbatim(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    blob = _blob(cache, "zstd", LAYERS[1])
    parts = load_stream_parts(INFO, CONFIG, [], [blob], "zstd")
    assert [p.blob for p in parts] == [None, blob, None]
    assert parts[1] == Part(blob=blob)


def test_rejects_mixed_codecs_and_foreign_layers(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    with pytest.raises(ValueError):
        load_stream_parts(INFO, CONFIG, [], [_blob(cache, "gzip", LAYERS[0])], "zstd")
    with pytest.raises(ValueError):
        load_stream_parts(INFO, CONFIG, [], [_blob(cache, "zstd", layer_tar(42))], "zstd")
