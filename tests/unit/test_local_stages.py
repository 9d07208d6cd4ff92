"""Stage images (deployer.local.stages): where the image is cut, and the load that makes them."""
from __future__ import annotations

import io
import json
import tarfile

from deployer.local.image import ImageInfo
from deployer.local.stages import STAGE_LABEL, cuts, layer_sizes, load_tar, plan, stage
from deployer.tarfmt import digest_of

MB = 1 << 20
D = tuple(f"sha256:{c * 64}" for c in "abcdef")
IMAGE = ImageInfo("ml:1", "sha256:" + "9" * 64, D, 0, "linux", "amd64", ("ml:1",))


def test_the_bytes_to_upload_are_cut_in_about_equal_parts_at_layer_boundaries() -> None:
    # an ML image: CUDA libs, stdlib, torch, assets, deps, code
    assert cuts([170 * MB, 85 * MB, 130 * MB, 50 * MB, 60 * MB, 2 * MB]) == [1, 3]
    assert cuts([100 * MB] * 5) == [2, 3]
    assert cuts([10 * MB] * 30) == [10, 20]
    assert cuts([100 * MB, 100 * MB]) == [1]


def test_no_stage_when_a_part_would_be_small() -> None:
    assert cuts([2 * MB]) == []
    assert cuts([100 * MB, 1 * MB]) == []  # nothing above the cut to overlap a pull with
    assert cuts([500 * MB, 1 * MB, 1 * MB]) == []
    assert cuts([1 * MB, 1 * MB, 500 * MB]) == []  # nothing below it
    assert cuts([0, 0, 0, 0, 0, 2 * MB]) == []  # a re-ship: only the code layer is new
    assert cuts([60 * MB, 60 * MB]) == []


def test_layer_sizes_from_history_only_when_each_entry_with_bytes_is_a_layer() -> None:
    assert layer_sizes([5, 0, 7, 0, 9], 3) == [5, 7, 9]  # the entries that made no layer left out
    assert layer_sizes([5, 0, 7], 3) is None  # a layer of size 0: which entry is it?
    assert layer_sizes([], 1) is None


def test_plan_cuts_only_what_the_registry_lacks() -> None:
    sizes = [100 * MB] * 5 + [1 * MB]
    got = plan(IMAGE, sizes, pushed=())
    assert [s.layers for s in got] == [2, 3]
    config = json.loads(got[0].config)
    assert config["rootfs"]["diff_ids"] == list(D[:2]) and config["config"]["Labels"] == {STAGE_LABEL: IMAGE.id}
    assert got[0].id == digest_of(got[0].config) != got[1].id
    assert plan(IMAGE, sizes, pushed=D[:5]) == []  # a re-ship: the lower layers were pushed before
    assert plan(IMAGE, None, pushed=()) == [] and plan(IMAGE, sizes[1:], pushed=()) == []  # sizes unknown


def test_the_load_carries_the_configs_and_no_layer_file() -> None:
    stages = [stage("linux", "amd64", D, 2, IMAGE.id), stage("linux", "amd64", D, 4, IMAGE.id)]
    with tarfile.open(fileobj=io.BytesIO(load_tar(stages, D))) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert [json.loads(tar.extractfile(e["Config"]).read()) for e in manifest] == \
            [json.loads(s.config) for s in stages]  # type: ignore[union-attr]
    assert names == ["manifest.json", *(f"{s.id[7:]}.json" for s in stages)]
    assert [len(e["Layers"]) for e in manifest] == [2, 4] and all(e["RepoTags"] is None for e in manifest)
    assert manifest[0]["Layers"][1] == f"{'b' * 64}/layer.tar"
