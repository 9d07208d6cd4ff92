"""Bundle assembly on synthetic save streams (the real daemons: tests/integration/test_bundle.py)."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard
from test_local_savestream import FakeClient, image, layer_tar, save_legacy

from deployer.chain import chain_ids
from deployer.errors import LocalError
from deployer.local.bundle import Target, load_command, target_warnings, write_bundle
from deployer.local.cache import Cache
from deployer.local.tarball import layer_path

LAYERS = [layer_tar(i, size=50_000) for i in range(3)]
INFO, CONFIG = image(LAYERS, ref="example/app:v1")


def _target(present: frozenset[str] = frozenset(), version: str = "20.10.24", tools: frozenset[str] = frozenset()) -> Target:
    return Target("air1", present, server_version=version, image_store="overlay2", decompressors=tools)


def test_load_command() -> None:
    assert load_command("/x/app.tar.zst", "zstd", None) == "zstd -dc app.tar.zst | docker load"
    assert load_command("app.tar.zst", "zstd", _target(version="24.0.7")) == "docker load -i app.tar.zst"
    assert load_command("app.tar.zst", "zstd", _target(version="20.10.24")) == "zstd -dc app.tar.zst | docker load"
    assert load_command("app.tgz", "gzip", _target()) == "docker load -i app.tgz"


def test_target_warnings() -> None:
    assert target_warnings("zstd", None) == []
    assert target_warnings("zstd", _target(tools=frozenset({"zstd"}))) == []
    assert target_warnings("zstd", _target(version="25.0.1")) == []
    assert target_warnings("gzip", _target()) == []
    (warning,) = target_warnings("zstd", _target())
    assert "air1" in warning and "--codec gzip" in warning


def _tar_names(path: Path) -> dict[str, bytes]:
    raw = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(path.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def test_full_and_delta_bundles(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    seen: list[str] = []
    full = write_bundle(INFO, tmp_path / "full.zst", client=FakeClient(save_legacy(INFO, CONFIG, LAYERS)),  # type: ignore[arg-type]
                        cache=cache, progress=lambda phase, done, total: seen.append(phase))
    assert (full.layers_total, full.layers_included, full.tags, full.target) == (3, 3, ("example/app:v1",), None)
    files = _tar_names(tmp_path / "full.zst")
    assert json.loads(files["manifest.json"])[0]["RepoTags"] == ["example/app:v1"]
    assert all(files[layer_path(d)] == layer for d, layer in zip(INFO.diff_ids, LAYERS))
    assert full.bytes == (tmp_path / "full.zst").stat().st_size and "writing" in seen

    present = frozenset(chain_ids(INFO.diff_ids[:2]))
    delta = write_bundle(INFO, tmp_path / "delta.zst", target=_target(present), client=FakeClient(b""),  # type: ignore[arg-type]
                         cache=cache)  # every blob is cached now: no docker save at all
    assert (delta.layers_included, delta.target) == (1, "air1")
    names = set(_tar_names(tmp_path / "delta.zst"))
    assert layer_path(INFO.diff_ids[2]) in names and layer_path(INFO.diff_ids[0]) not in names
    assert delta.raw_bytes == len(LAYERS[2])


def test_failed_export_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "b.zst"
    with pytest.raises(LocalError):
        write_bundle(INFO, out, client=FakeClient(save_legacy(INFO, CONFIG, LAYERS)[:70_000]),  # type: ignore[arg-type]
                     cache=Cache(tmp_path / "cache"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match="does not exist"):
        write_bundle(INFO, tmp_path / "nope" / "b.zst", client=FakeClient(b""), cache=Cache(tmp_path))  # type: ignore[arg-type]
