"""The docker-load scripts of `deploy ship`, run by a real sh against a strict stand-in `docker`
(tests/unit/fakedocker.py)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from fakedocker import Image, fake_docker, sha

from deployer.commands import load as ld
from deployer.commands import ship as cmd


def sh(argv: tuple[str, ...], input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), input=input, capture_output=True, check=False)


def test_head_is_a_tar_prefix_with_manifest_config_and_layer_headers() -> None:
    config = b'{"rootfs":{"diff_ids":["sha256:1"]}}'
    files = [ld.LoadFile("sha256:" + "a" * 64, "/s/x.zst", 1000)]
    head, blocks = ld.load_head(config, ["sha256:" + "a" * 64], files)
    assert len(head) == (blocks + 1) * 512 and blocks == 4  # two members of one block each + data
    manifest = json.loads(head[512:1024].rstrip(b"\0"))
    assert manifest == [{"Config": f"{ld.config_id(config)[7:]}.json", "RepoTags": None,
                         "Layers": [f"{'a' * 64}/layer.tar"]}]
    assert head[-512:].startswith(f"{'a' * 64}/layer.tar".encode())


def test_partial_config_is_labelled_and_stable() -> None:
    a = ld.partial_config("linux", "arm64", ["sha256:1"], "/srv/st")
    assert a == ld.partial_config("linux", "arm64", ["sha256:1"], "/srv/st")
    doc = json.loads(a)
    assert doc["config"]["Labels"] == {ld.PARTIAL_LABEL: "/srv/st"} and doc["architecture"] == "arm64"
    assert doc["rootfs"] == {"type": "layers", "diff_ids": ["sha256:1"]}


def test_exact_argv_keeps_variable_parts_out_of_the_script() -> None:
    files = [ld.LoadFile("sha256:1", "/s/a b.gz", 1000)]
    argv = ld.load_argv(("sudo", "docker"), "/s/h; rm -rf /", "gzip", 3, files)
    assert argv[:2] == ("sh", "-c") and argv[3:] == ("sh", "/s/h; rm -rf /", "gzip", "3", "1", "/s/a b.gz", "24",
                                                     "sudo", "docker")
    with pytest.raises(ValueError):
        ld.load_argv(("docker",), "/h", "lz4", 3, files)
    with pytest.raises(ValueError):  # the cleanup word-splits blob names: only hex.zst / hex.gz
        ld.install_argv(("docker",), "/h", "sha256:1", "t:v", "/s", "/s/b", ["a b*.zst"], "gzip", 3, [])
    argv = ld.remove_partials_argv(("docker",), "/srv/st")
    assert argv[3:] == ("sh", f"{ld.PARTIAL_LABEL}=/srv/st", "docker")


def test_stand_ins_then_install_leave_only_the_tagged_image(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    # layers 1-2 arrive first: a stand-in holds them
    partial = ld.partial_config("linux", "amd64", img.diff_ids[:2], img.staging)
    head, blocks = ld.load_head(partial, img.diff_ids[:2], img.files[:2])
    res = sh(ld.load_argv(docker, img.head_path(), "gzip", blocks, img.files[:2]), head)
    assert res.returncode == 0, res.stderr
    assert ld.parse_loaded(res.stdout.decode()) == (ld.config_id(partial),)
    assert not Path(img.head_path()).exists()
    # install brings the rest with the real config, drops the stand-in and the blobs, tags
    head, blocks = ld.load_head(img.config, img.diff_ids, img.files[2:])
    argv = ld.install_argv(docker, img.head_path(), img.id, "t:v", img.staging, cmd.blob_dir(img.staging),
                           img.names, "gzip", blocks, img.files[2:])
    res = sh(argv, head)
    assert res.returncode == 0, res.stderr
    assert ld.parse_install(res.stdout.decode()) == ld.Installed(img.id, img.id)
    after = json.loads(state.read_text())
    assert list(after["images"]) == [img.id] and after["tags"] == {"t:v": img.id}
    assert not list(Path(cmd.blob_dir(img.staging)).iterdir()) and not Path(img.head_path()).exists()
    # retry-safe: run again as after a lost reply (blobs gone): nothing loads, REF is tagged again
    res = sh(argv, head)
    assert res.returncode == 0 and ld.parse_install(res.stdout.decode()) == ld.Installed(img.id, img.id)


def test_link_mode_sends_the_blob_as_is(tmp_path: Path) -> None:
    """A Docker that reads the codec itself gets the blob unchanged (our stand-in reads plain tar)."""
    img = Image(tmp_path)
    docker, _ = fake_docker(tmp_path)
    plain = [ld.LoadFile(f.diff_id, f.src + ".raw", f.size) for f in img.files]
    for f, raw in zip(plain, img.layers):
        Path(f.src).write_bytes(raw)
    head, blocks = ld.load_head(img.config, img.diff_ids, plain)
    res = sh(ld.install_argv(docker, img.head_path(), img.id, "t:v", img.staging, cmd.blob_dir(img.staging),
                             img.names, "link", blocks, plain), head)
    assert res.returncode == 0, res.stderr


def test_a_layer_that_does_not_match_fails_the_load_and_keeps_the_blobs(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    swapped = [img.files[0], img.files[1], ld.LoadFile(img.diff_ids[2], img.files[3].src, img.files[2].size),
               img.files[3]]
    head, blocks = ld.load_head(img.config, img.diff_ids, swapped)
    res = sh(ld.install_argv(docker, img.head_path(), img.id, "t:v", img.staging, cmd.blob_dir(img.staging),
                             img.names, "gzip", blocks, swapped), head)
    assert res.returncode == 5 and b"invalid diffID" in res.stderr
    assert len(list(Path(cmd.blob_dir(img.staging)).iterdir())) == 4 and not Path(img.head_path()).exists()
    assert not state.exists() or not json.loads(state.read_text())["tags"]


def test_a_blob_that_fails_to_decompress_loads_nothing(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    Path(img.files[1].src).write_bytes(b"not gzip at all")
    head, blocks = ld.load_head(img.config, img.diff_ids, img.files)
    res = sh(ld.load_argv(docker, img.head_path(), "gzip", blocks, img.files), head)
    assert res.returncode != 0 and not ld.parse_loaded(res.stdout.decode())
    assert not state.exists() or not json.loads(state.read_text())["images"]


def test_a_wrong_image_id_is_exit_6_and_nothing_is_tagged(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    head, blocks = ld.load_head(img.config, img.diff_ids, img.files)
    other = "sha256:" + "7" * 64
    res = sh(ld.install_argv(docker, img.head_path(), other, "t:v", img.staging, cmd.blob_dir(img.staging),
                             img.names, "gzip", blocks, img.files), head)
    assert res.returncode == 6 and ld.parse_loaded(res.stdout.decode()) == (img.id,)
    assert json.loads(state.read_text())["tags"] == {}


def test_remove_partials_drops_only_this_staging_dirs_stand_ins(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    for staging in (img.staging, "/other/staging"):
        cfg = ld.partial_config("linux", "amd64", img.diff_ids[:1], staging)
        head, blocks = ld.load_head(cfg, img.diff_ids[:1], img.files[:1])
        assert sh(ld.load_argv(docker, img.head_path(), "gzip", blocks, img.files[:1]), head).returncode == 0
    assert sh(ld.remove_partials_argv(docker, img.staging)).returncode == 0
    left = json.loads(state.read_text())["images"]
    assert [labels[ld.PARTIAL_LABEL] for labels in left.values()] == ["/other/staging"]


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd binary not installed")
def test_zstd_mode_decompresses_on_the_host(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, _ = fake_docker(tmp_path)
    files = []
    for f, raw in zip(img.files, img.layers):
        blob = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
        path = cmd.blob_path(img.staging, sha(blob), "zstd")
        Path(path).write_bytes(blob)
        files.append(ld.LoadFile(f.diff_id, path, f.size))
    head, blocks = ld.load_head(img.config, img.diff_ids, files)
    res = sh(ld.load_argv(docker, img.head_path(), "zstd", blocks, files), head)
    assert res.returncode == 0 and ld.parse_loaded(res.stdout.decode()) == (img.id,), res.stderr
