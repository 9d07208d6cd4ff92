"""The bases a BuildKit build declared (deployer.local.declared): reading buildx's metadata file,
choosing the base among them, and the record kept per built image; and the build writing it."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from deployer.local import build, declared
from deployer.local.declared import Declared, DeclaredBase, Material, materials, parse_purl, pick_declared

H = "d88eccc81430e33fee22740a4d2b6595809d558acaf982c9aeff434a586d1a4e"
CONFIG = "sha256:8c402cb8417ac08c120ef1b4ce84754f9f971ff839c1df3471c600f7f8946484"
# what buildx 0.29.1 wrote for `FROM 10.213.0.5:5000/exp19/base:1` (docker driver, --provenance=false)
METADATA = {
    "buildx.build.provenance": {
        "builder": {"id": ""},
        "buildType": "https://mobyproject.org/buildkit@v1",
        "materials": [{"uri": "pkg:docker/10.213.0.5:5000/exp19/base@1?platform=linux%2Famd64",
                       "digest": {"sha256": H}}],
        "invocation": {"configSource": {"entryPoint": "Dockerfile"}, "environment": {"platform": "linux/amd64"}},
    },
    "buildx.build.ref": "default/default/uw1i8bsyf5jnwpi986v355dqp",
    "containerimage.config.digest": CONFIG,
    "containerimage.digest": CONFIG,
    "image.name": "docker.io/exp19/app:1",
}
D = tuple(f"sha256:{str(i) * 64}" for i in range(1, 6))


def test_package_urls_of_docker_images() -> None:
    assert parse_purl("pkg:docker/10.213.0.5:5000/exp19/base@1?platform=linux%2Famd64") == (
        "10.213.0.5:5000/exp19/base", "1", "linux/amd64")
    assert parse_purl("pkg:docker/busybox@latest?platform=linux%2Farm64%2Fv8") == ("busybox", "latest", "linux/arm64/v8")
    assert parse_purl("pkg:docker/nvcr.io/nvidia/pytorch@24.01-py3") == ("nvcr.io/nvidia/pytorch", "24.01-py3", "")
    # FROM repo@sha256:...: no tag, the digest is the version
    assert parse_purl(f"pkg:docker/team/base@sha256%3A{H}?platform=linux%2Famd64") == ("team/base", None, "linux/amd64")
    assert parse_purl("https://github.com/x/y.git#main") is None
    assert parse_purl("pkg:docker/") is None


def test_the_metadata_names_the_base_with_the_digest_the_build_resolved() -> None:
    assert materials(METADATA) == (Material("10.213.0.5:5000/exp19/base", "1", f"sha256:{H}", "linux/amd64"),)
    assert materials({"containerimage.config.digest": CONFIG}) == ()  # BUILDX_METADATA_PROVENANCE=disabled
    assert materials({}) == ()


def test_every_stage_and_platform_is_read_once_and_other_materials_are_skipped() -> None:
    go = {"uri": "pkg:docker/golang@1.22?platform=linux%2Famd64", "digest": {"sha256": "a" * 64}}
    py = {"uri": "pkg:docker/python@3.11-slim?platform=linux%2Famd64", "digest": {"sha256": "b" * 64}}
    git = {"uri": "https://github.com/x/y.git#main", "digest": {"sha1": "c" * 40}}
    arm = {"uri": "pkg:docker/python@3.11-slim?platform=linux%2Farm64", "digest": {"sha256": "b" * 64}}
    odd = [{"uri": "pkg:docker/x@1", "digest": {"sha256": "short"}}, {"uri": "pkg:docker/y@1"}, "junk"]
    metadata = {"buildx.build.provenance/linux/amd64": {"materials": [go, py, git, go, *odd]},
                "buildx.build.provenance/linux/arm64": {"materials": [arm]},
                "buildx.build.ref": "x"}
    assert [(m.name, m.platform) for m in materials(metadata)] == [
        ("golang", "linux/amd64"), ("python", "linux/amd64"), ("python", "linux/arm64")]


def test_the_base_is_the_longest_declared_run_of_bottom_layers() -> None:
    build_stage = DeclaredBase("golang@sha256:" + "a" * 64, "sha256:" + "e" * 64, ("sha256:" + "9" * 64,))
    short = DeclaredBase("r/a@sha256:" + "1" * 64, "sha256:c1", D[:1])
    longer = DeclaredBase("r/b@sha256:" + "2" * 64, "sha256:c2", D[:3])
    whole = DeclaredBase("r/c@sha256:" + "3" * 64, "sha256:c3", D)  # the image itself: not its base
    assert pick_declared(D, [build_stage, short, longer, whole]) == longer
    assert pick_declared(D, [build_stage, whole]) is None
    assert pick_declared(D, []) is None


def test_the_record_of_a_build_and_of_the_registrys_answer(tmp_path: Path) -> None:
    path = tmp_path / "bases.json"
    assert declared.lookup(CONFIG, path) is None
    [material] = materials(METADATA)
    declared.record(CONFIG, [material], path)
    assert declared.lookup(CONFIG, path) == Declared((material,))
    base = DeclaredBase("10.213.0.5:5000/exp19/base@sha256:" + H, "sha256:" + "7" * 64, D[:2])
    declared.settle(CONFIG, base, True, path)
    assert declared.lookup(CONFIG, path) == Declared((material,), base, True, 0.0)
    # a registry that did not answer is asked again only after a while
    declared.settle(CONFIG, None, False, path)
    entry = declared.lookup(CONFIG, path)
    assert entry is not None and entry.base is None and not entry.due(time.time())
    assert entry.due(time.time() + declared.RETRY_S)
    declared.settle("sha256:unknown", base, True, path)  # nothing recorded for it: nothing to settle
    assert declared.lookup("sha256:unknown", path) is None
    path.write_text("{not json")
    assert declared.lookup(CONFIG, path) is None


def test_the_record_keeps_the_newest_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bases.json"
    monkeypatch.setattr(declared, "MAX_ENTRIES", 3)
    for i in range(5):
        declared.record(f"sha256:{i}", [Material("x", "1", f"sha256:{H}")], path)
    assert sorted(json.loads(path.read_text())) == ["sha256:2", "sha256:3", "sha256:4"]


def test_a_build_records_what_its_metadata_file_declares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps(METADATA))
    build._record_bases(str(meta))
    entry = declared.lookup(CONFIG)
    assert entry is not None and entry.materials == materials(METADATA)
    assert declared.store_path() == tmp_path / "cache" / "deployer" / "bases.json"
    # no provenance, no file, no JSON: the build goes on and nothing is recorded
    meta.write_text(json.dumps({"containerimage.config.digest": "sha256:" + "0" * 64}))
    build._record_bases(str(meta))
    build._record_bases(str(tmp_path / "absent.json"))
    meta.write_text("{")
    build._record_bases(str(meta))
    assert list(json.loads(declared.store_path().read_text())) == [CONFIG]
