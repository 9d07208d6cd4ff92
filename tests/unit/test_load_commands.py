"""The docker-load scripts of `deploy ship`, run by a real sh against a strict stand-in `docker`
(tests/unit/fakedocker.py)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from fakedocker import Image, calls, fake_docker, sha

from deployer.commands import load as ld
from deployer.commands import ship as cmd
from deployer.commands.layers import parse_content, present_layers_argv
from deployer.tarfmt import OCI_LAYER, Descriptor, uncompressed_layer


def _head(head: ld.LoadHead) -> tuple[bytes, int]:
    return head.data, head.blocks


def sh(argv: tuple[str, ...], input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), input=input, capture_output=True, check=False)


OLD = "sha256:" + "0" * 64  # the image REF named before a ship


def test_head_is_a_tar_prefix_with_manifest_config_and_layer_headers() -> None:
    config = b'{"rootfs":{"diff_ids":["sha256:1"]}}'
    files = [ld.LoadFile("sha256:" + "a" * 64, "/s/x.zst", 1000)]
    head, blocks = _head(ld.load_head("legacy", config, ["sha256:" + "a" * 64], files))
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
    assert argv[:2] == ("sh", "-c") and argv[3:] == ("sh", "/s/h; rm -rf /", "", "", "", "", "0", "gzip", "3", "1",
                                                     "/s/a b.gz", "24", "sudo", "docker")
    with pytest.raises(ValueError):
        ld.load_argv(("docker",), "/h", "gzip", 3, files, stall_s=-1)
    with pytest.raises(ValueError):  # a stand-in's id is written to a file named by it
        ld.load_argv(("docker",), "/h", "gzip", 3, files, "/s", standin="sha256:../../x")
    with pytest.raises(ValueError):
        ld.load_argv(("docker",), "/h", "lz4", 3, files)
    with pytest.raises(ValueError):  # the cleanup word-splits blob names: only hex.zst / hex.gz
        ld.install_argv(("docker",), "/h", "sha256:1", "t:v", "/s", "/s/b", ["a b*.zst"], "gzip", 3, [])
    argv = ld.remove_partials_argv(("docker",), "/srv/st")
    assert argv[3:] == ("sh", f"{ld.PARTIAL_LABEL}=/srv/st", "docker")


def test_stand_ins_then_install_leave_only_the_tagged_image(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    # layer 1 arrives, then layer 2: a stand-in holds each run as it lands
    standins = []
    for end in (1, 2):
        partial = ld.partial_config("linux", "amd64", img.diff_ids[:end], img.staging)
        head, blocks = _head(ld.load_head("legacy", partial, img.diff_ids[:end], img.files[end - 1:end]))
        res = sh(ld.load_argv(docker, img.head_path(), "gzip", blocks, img.files[end - 1:end], img.staging,
                              standin=ld.config_id(partial)), head)
        assert res.returncode == 0, res.stderr
        assert ld.parse_loaded(res.stdout.decode()) == (ld.config_id(partial),)
        assert not Path(img.head_path()).exists()
        standins.append(ld.config_id(partial)[7:])
    # their ids are on record (written before each load), for the install to remove them without a listing
    assert sorted(p.name for p in Path(ld.standins_dir(img.staging)).iterdir()) == sorted(standins)
    # install brings the rest with the real config, drops the stand-in and the blobs, tags
    head, blocks = _head(ld.load_head("legacy", img.config, img.diff_ids, img.files[2:]))
    argv = ld.install_argv(docker, img.head_path(), img.id, "t:v", img.staging, cmd.blob_dir(img.staging),
                           img.names, "gzip", blocks, img.files[2:])
    before = len(calls(state))
    res = sh(argv, head)
    assert res.returncode == 0, res.stderr
    assert ld.parse_install(res.stdout.decode()) == ld.Installed(img.id, img.id)
    # its layer files are there: no need to ask whether the image is, it loads at once; the
    # stand-ins are known from their records, not from listing the host's images, and go in one call
    # as soon as the image is loaded, while it is checked and tagged (the rm may reach the daemon
    # before or after either); the tag only after the check
    made = [" ".join(c.split()[:2]) if c.startswith("image") else c.split()[0] for c in calls(state)[before:]]
    assert made[0] == "load" and sorted(made[1:]) == ["image inspect", "image rm", "tag"]
    assert made.index("image inspect") < made.index("tag")
    assert not Path(ld.standins_dir(img.staging)).exists() or not list(Path(ld.standins_dir(img.staging)).iterdir())
    after = json.loads(state.read_text())
    assert list(after["images"]) == [img.id] and after["tags"] == {"t:v": img.id}
    assert not list(Path(cmd.blob_dir(img.staging)).iterdir()) and not Path(img.head_path()).exists()
    # retry-safe: run again as after a lost reply (blobs gone): nothing loads, REF is tagged again
    before = len(calls(state))
    res = sh(argv, head)
    assert res.returncode == 0 and ld.parse_install(res.stdout.decode()) == ld.Installed(img.id, img.id)
    assert "load" not in calls(state)[before:]


def test_the_install_answers_before_the_staged_blobs_are_unlinked(tmp_path: Path) -> None:
    """The staged blobs leave the blob dir before the install answers (renamed to a private dir
    beside it), and their data is unlinked after: here an `rm -rf` that waits for a go-ahead
    file, so the answer must come while the blobs' dir is still there."""
    img = Image(tmp_path)
    docker, _state = fake_docker(tmp_path)
    shims, go = tmp_path / "shims", tmp_path / "go"
    shims.mkdir()
    (shims / "rm").write_text(f'#!/bin/sh\ncase "$*" in *.trash-*) while [ ! -e {go} ]; do sleep 0.05; done ;; esac\n'
                              'exec /bin/rm "$@"\n')
    (shims / "rm").chmod(0o755)
    head, blocks = _head(ld.load_head("legacy", img.config, img.diff_ids, img.files))
    argv = ld.install_argv(docker, img.head_path(), img.id, "t:v", img.staging, cmd.blob_dir(img.staging),
                           img.names, "gzip", blocks, img.files)
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}
    res = subprocess.run(list(argv), input=head, capture_output=True, check=False, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert ld.parse_install(res.stdout.decode()) == ld.Installed(img.id, img.id)
    assert not list(Path(cmd.blob_dir(img.staging)).iterdir())  # out of the blob dir at once
    trash = list(Path(cmd.blob_dir(img.staging)).parent.glob(".trash-*"))
    assert len(trash) == 1 and sorted(p.name for p in trash[0].iterdir()) == sorted(img.names)
    go.touch()  # the unlink may go on now, and does
    deadline = time.monotonic() + 30
    while trash[0].exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not trash[0].exists()


@pytest.mark.parametrize("whole", [False, True])
def test_a_load_that_names_the_ref_tags_it_itself_and_one_inspect_checks_both(tmp_path: Path, whole: bool) -> None:
    """A load whose head names REF tags it itself; one inspect then checks the id and REF. WHOLE: a
    "legacy" load checks every layer against its diff id and its image's id is the config's digest,
    so once it succeeds REF names exactly the image, and the install asks Docker nothing after it
    (a re-ship's one docker call after the load). A retry after a lost reply (the blobs gone,
    nothing to load) checks and tags either way."""
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    with pytest.raises(ValueError, match="only a load that names REF"):
        ld.install_argv(docker, img.head_path(), img.id, "t:v", img.staging, cmd.blob_dir(img.staging),
                        img.names, "gzip", 1, img.files, whole=True)
    sh((*docker, "tag", "sha256:old", "t:v"))  # REF names an older image until the load
    head = ld.load_head("legacy", img.config, img.diff_ids, img.files, tags=("t:v",))
    assert json.loads(head.data[512:1024].rstrip(b"\0"))[0]["RepoTags"] == ["t:v"]
    argv = ld.install_argv(docker, img.head_path(), img.id, "t:v", img.staging, cmd.blob_dir(img.staging),
                           img.names, "gzip", head.blocks, img.files, tagged=True, whole=whole)
    before = len(calls(state))
    res = sh(argv, head.data)
    assert res.returncode == 0, res.stderr
    assert ld.parse_install(res.stdout.decode()) == ld.Installed(img.id, img.id)
    assert calls(state)[before:] == (["load"] if whole else ["load", "image inspect"])
    assert json.loads(state.read_text())["tags"] == {"t:v": img.id}
    assert not list(Path(cmd.blob_dir(img.staging)).iterdir())
    # a retry after a lost reply: the blobs are gone, nothing loads, so it tags REF the usual way
    sh((*docker, "tag", "sha256:old", "t:v"))
    before = len(calls(state))
    res = sh(argv, head.data)
    assert res.returncode == 0 and ld.parse_install(res.stdout.decode()) == ld.Installed(img.id, img.id)
    assert [c.split()[0] for c in calls(state)[before:]] == ["image", "image", "tag"]
    assert json.loads(state.read_text())["tags"] == {"t:v": img.id}


def test_an_oci_load_names_the_ref_fully_qualified_and_one_inspect_checks_it(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    files, layers = _link(img)
    head = ld.load_head("oci", img.config, img.diff_ids, files, layers, tags=("t:v",))
    index = json.loads(_members(head)["index.json"])
    assert [m["annotations"] for m in index["manifests"]] == [{"io.containerd.image.name": "docker.io/library/t:v"}]
    assert head.image_id == ld.load_head("oci", img.config, img.diff_ids, files, layers).image_id  # the same image
    with pytest.raises(ValueError, match="not an image id"):
        ld.install_argv(docker, img.head_path(), head.image_id, "t:v", img.staging, cmd.blob_dir(img.staging),
                        img.names, "link", head.blocks, files, tagged=True, previous="t:old; rm -rf /")
    res, image_id = _oci_install(docker, img, files, layers, named=True, previous=OLD)
    assert res.returncode == 0, res.stderr
    assert ld.parse_install(res.stdout.decode()) == ld.Installed(image_id, image_id)
    assert calls(state) == ["load", "image inspect"]  # no tag after the load
    assert json.loads(state.read_text())["tags"] == {"t:v": image_id}


@pytest.mark.parametrize("previous", [OLD, ""])
def test_a_named_oci_load_that_comes_out_incomplete_names_the_previous_image_again(tmp_path: Path,
                                                                                   previous: str) -> None:
    """The containerd store loads an image it holds only in part (moby#49784) and names it as the
    index says: the install's check fails (exit 8) and REF names what it named before (nothing,
    if it named nothing), so no one runs the broken image by its name."""
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    state.write_text(json.dumps(_pulled(img, 3, tags={"t:v": previous} if previous else {})))
    files, layers = _link(img)
    guessed = {**{f.diff_id: uncompressed_layer(f.diff_id, f.size) for f in img.files[:3]},
               img.diff_ids[3]: layers[img.diff_ids[3]]}
    res, _image_id = _oci_install(docker, img, files[3:], guessed, named=True, previous=previous)
    assert res.returncode == 8, res.stderr
    assert json.loads(state.read_text())["tags"] == ({"t:v": previous} if previous else {})
    assert len(list(Path(cmd.blob_dir(img.staging)).iterdir())) == 4  # kept for the second try
    res, again = _oci_install(docker, img, files, layers, named=True, previous=previous)
    assert res.returncode == 0, res.stderr
    assert json.loads(state.read_text())["tags"] == {"t:v": again}


def test_link_mode_sends_the_blob_as_is(tmp_path: Path) -> None:
    """A Docker that reads the codec itself gets the blob unchanged (our stand-in reads plain tar)."""
    img = Image(tmp_path)
    docker, _ = fake_docker(tmp_path)
    plain = [ld.LoadFile(f.diff_id, f.src + ".raw", f.size) for f in img.files]
    for f, raw in zip(plain, img.layers):
        Path(f.src).write_bytes(raw)
    head, blocks = _head(ld.load_head("legacy", img.config, img.diff_ids, plain))
    res = sh(ld.install_argv(docker, img.head_path(), img.id, "t:v", img.staging, cmd.blob_dir(img.staging),
                             img.names, "link", blocks, plain), head)
    assert res.returncode == 0, res.stderr


def test_a_layer_that_does_not_match_fails_the_load_and_keeps_the_blobs(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    swapped = [img.files[0], img.files[1], ld.LoadFile(img.diff_ids[2], img.files[3].src, img.files[2].size),
               img.files[3]]
    head, blocks = _head(ld.load_head("legacy", img.config, img.diff_ids, swapped))
    res = sh(ld.install_argv(docker, img.head_path(), img.id, "t:v", img.staging, cmd.blob_dir(img.staging),
                             img.names, "gzip", blocks, swapped), head)
    assert res.returncode == 5 and b"invalid diffID" in res.stderr
    assert len(list(Path(cmd.blob_dir(img.staging)).iterdir())) == 4 and not Path(img.head_path()).exists()
    assert not state.exists() or not json.loads(state.read_text())["tags"]


def test_a_blob_that_fails_to_decompress_loads_nothing(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    Path(img.files[1].src).write_bytes(b"not gzip at all")
    head, blocks = _head(ld.load_head("legacy", img.config, img.diff_ids, img.files))
    res = sh(ld.load_argv(docker, img.head_path(), "gzip", blocks, img.files), head)
    assert res.returncode != 0 and not ld.parse_loaded(res.stdout.decode())
    assert not state.exists() or not json.loads(state.read_text())["images"]


def test_a_load_that_named_the_ref_but_made_another_image_names_the_previous_one_again(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    sh((*docker, "tag", OLD, "t:v"))
    head = ld.load_head("legacy", img.config, img.diff_ids, img.files, tags=("t:v",))
    res = sh(ld.install_argv(docker, img.head_path(), "sha256:" + "7" * 64, "t:v", img.staging,
                             cmd.blob_dir(img.staging), img.names, "gzip", head.blocks, img.files, tagged=True,
                             previous=OLD), head.data)
    assert res.returncode == 6
    assert json.loads(state.read_text())["tags"] == {"t:v": OLD}


def test_a_wrong_image_id_is_exit_6_and_nothing_is_tagged(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    head, blocks = _head(ld.load_head("legacy", img.config, img.diff_ids, img.files))
    other = "sha256:" + "7" * 64
    res = sh(ld.install_argv(docker, img.head_path(), other, "t:v", img.staging, cmd.blob_dir(img.staging),
                             img.names, "gzip", blocks, img.files), head)
    assert res.returncode == 6 and ld.parse_loaded(res.stdout.decode()) == (img.id,)
    assert json.loads(state.read_text())["tags"] == {}


def test_remove_partials_drops_only_this_staging_dirs_stand_ins(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    for staging, end in ((img.staging, 1), (img.staging, 2), ("/other/staging", 1)):
        cfg = ld.partial_config("linux", "amd64", img.diff_ids[:end], staging)
        head, blocks = _head(ld.load_head("legacy", cfg, img.diff_ids[:end], img.files[:end]))
        assert sh(ld.load_argv(docker, img.head_path(), "gzip", blocks, img.files[:end]), head).returncode == 0
    before = len(calls(state))
    assert sh(ld.remove_partials_argv(docker, img.staging)).returncode == 0
    assert calls(state)[before:] == ["images -q", "image rm"]  # both of this dir's stand-ins in one call
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
    head, blocks = _head(ld.load_head("legacy", img.config, img.diff_ids, files))
    res = sh(ld.load_argv(docker, img.head_path(), "zstd", blocks, files), head)
    assert res.returncode == 0 and ld.parse_loaded(res.stdout.decode()) == (img.id,), res.stderr


def _link(img: Image) -> tuple[list[ld.LoadFile], dict[str, Descriptor]]:
    """The staged gzip blobs as an OCI load carries them (as is), and the descriptors naming them."""
    files = [ld.LoadFile(b.diff_id, str(b.path), b.size) for b in img.blobs]
    return files, {b.diff_id: Descriptor(f"{OCI_LAYER}+gzip", b.digest, b.size) for b in img.blobs}


def _oci_install(docker: tuple[str, ...], img: Image, files: list[ld.LoadFile], layers: dict[str, Descriptor],
                 named: bool = False, previous: str = "") -> tuple[subprocess.CompletedProcess[bytes], str]:
    """The install's OCI load (NAMED: the load names REF, as a ship's does; PREVIOUS: what REF named)."""
    head = ld.load_head("oci", img.config, img.diff_ids, files, layers, tags=("t:v",) if named else ())
    argv = ld.install_argv(docker, img.head_path(), head.image_id, "t:v", img.staging, cmd.blob_dir(img.staging),
                           img.names, "link", head.blocks, files, list(layers.items()), tagged=named,
                           previous=previous)
    return sh(argv, head.data), head.image_id


def _members(head: ld.LoadHead) -> dict[str, bytes]:
    """The small files of a load's tar head, by name."""
    members = {}
    with tarfile.open(fileobj=io.BytesIO(head.data[: head.blocks * 512] + b"\0" * 1024)) as tar:
        for m in tar:
            members[m.name] = tar.extractfile(m).read()  # type: ignore[union-attr]
    return members


def _pulled(img: Image, n: int, tags: dict[str, str]) -> dict[str, object]:
    """A fake Docker's state after a registry pull of IMG's first N layers: their snapshots, and
    content under other (compressed) digests."""
    chains, c = [], None
    for d in img.diff_ids[:n]:
        c = d if c is None else "sha256:" + hashlib.sha256(f"{c} {d}".encode()).hexdigest()
        chains.append(c)
    return {"images": {}, "chains": chains, "tags": tags, "content": ["sha256:" + "9" * 64], "manifests": {}}


def _records(img: Image) -> dict[str, Descriptor]:
    out = sh(present_layers_argv(("true",), img.staging)).stdout.decode()
    return parse_content(out)


def test_oci_head_names_each_layer_by_its_blob_and_its_id_is_the_manifest_digest() -> None:
    config = b'{"rootfs":{"diff_ids":["sha256:1","sha256:2"]}}'
    diff_ids = ["sha256:" + "a" * 64, "sha256:" + "b" * 64]
    zst = Descriptor(f"{OCI_LAYER}+zstd", "sha256:" + "c" * 64, 700)
    files = [ld.LoadFile(diff_ids[1], "/s/x.zst", 700)]
    with pytest.raises(ValueError, match="no blob named"):
        ld.load_head("oci", config, diff_ids, files, {diff_ids[1]: zst})
    with pytest.raises(ValueError, match="its file is 700 bytes"):
        ld.load_head("oci", config, diff_ids, files, {diff_ids[0]: zst, diff_ids[1]: Descriptor(OCI_LAYER, "x", 5)})
    layers = {diff_ids[0]: uncompressed_layer(diff_ids[0], 1000), diff_ids[1]: zst}
    head = ld.load_head("oci", config, diff_ids, files, layers)
    members = _members(head)
    index = json.loads(members["index.json"])
    manifest_digest = index["manifests"][0]["digest"]
    assert head.image_id == manifest_digest and "annotations" not in index["manifests"][0]
    manifest = json.loads(members[f"blobs/sha256/{manifest_digest[7:]}"])
    assert manifest["config"]["digest"] == ld.config_id(config)
    assert [(d["digest"], d["size"], d["mediaType"]) for d in manifest["layers"]] == [
        (diff_ids[0], 1000, OCI_LAYER), (zst.digest, 700, f"{OCI_LAYER}+zstd")]
    assert head.data[-512:].startswith(f"blobs/sha256/{'c' * 64}".encode())  # the file is named by its blob
    # the same layers named the same way give the same id: the sender knows it before the load
    assert ld.load_head("oci", config, diff_ids, [], layers).image_id == head.image_id


def test_oci_stand_ins_then_install_on_a_containerd_store_record_each_layers_blob(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    files, layers = _link(img)
    partial = ld.partial_config("linux", "amd64", img.diff_ids[:2], img.staging)
    first = {d: layers[d] for d in img.diff_ids[:2]}
    head = ld.load_head("oci", partial, img.diff_ids[:2], files[:2], first)
    res = sh(ld.load_argv(docker, img.head_path(), "link", head.blocks, files[:2], img.staging,
                          list(first.items()), head.image_id), head.data)
    assert res.returncode == 0, res.stderr
    assert ld.parse_loaded(res.stdout.decode()) == (head.image_id,)
    assert _records(img) == first  # a killed ship's next run names these layers by the same blobs
    res, image_id = _oci_install(docker, img, files[2:], layers)
    assert res.returncode == 0, res.stderr
    assert ld.parse_install(res.stdout.decode()) == ld.Installed(image_id, image_id)
    after = json.loads(state.read_text())
    assert list(after["images"]) == [image_id] and after["tags"] == {"t:v": image_id}
    assert _records(img) == layers


def test_oci_delta_names_the_layers_it_leaves_out_as_recorded(tmp_path: Path) -> None:
    """Layers loaded earlier by deployer are in the content store under the blobs it recorded: a
    tar with only the new layer's blob gives a complete, listed image."""
    img = Image(tmp_path)
    docker, _state = fake_docker(tmp_path)
    files, layers = _link(img)
    first = {d: layers[d] for d in img.diff_ids[:3]}
    cfg = ld.partial_config("linux", "amd64", img.diff_ids[:3], "/elsewhere")
    head = ld.load_head("oci", cfg, img.diff_ids[:3], files[:3], first)
    assert sh(ld.load_argv(docker, img.head_path(), "link", head.blocks, files[:3], img.staging,
                           list(first.items())), head.data).returncode == 0
    res, image_id = _oci_install(docker, img, files[3:], {**_records(img), img.diff_ids[3]: layers[img.diff_ids[3]]})
    assert res.returncode == 0, res.stderr
    assert image_id in sh((*docker, "images", "-aq", "--no-trunc")).stdout.decode().split()


def test_oci_incomplete_image_is_exit_8_then_completed_by_sending_the_layers(tmp_path: Path) -> None:
    """Layers the host unpacked from a registry pull are held under compressed digests: a load that
    names them by their uncompressed digest succeeds but the image is not listed (exit 8, blobs
    kept); a load carrying them too completes the image."""
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    state.write_text(json.dumps(_pulled(img, 3, tags={})))  # snapshots of the first three, gzip blobs
    files, layers = _link(img)
    guessed = {**{f.diff_id: uncompressed_layer(f.diff_id, f.size) for f in img.files[:3]},
               img.diff_ids[3]: layers[img.diff_ids[3]]}
    res, image_id = _oci_install(docker, img, files[3:], guessed)
    assert res.returncode == 8, res.stderr
    assert len(list(Path(cmd.blob_dir(img.staging)).iterdir())) == 4  # kept for the second try
    assert json.loads(state.read_text())["tags"] == {} and _records(img) == {}
    res, again = _oci_install(docker, img, files, layers)
    assert res.returncode == 0 and again != image_id, res.stderr
    assert json.loads(state.read_text())["tags"] == {"t:v": again}


def _arrive(path: Path, data: bytes, proc: subprocess.Popen[bytes], pieces: int = 3) -> None:
    """Write DATA to PATH's .partial a piece at a time, as the receive does, then name it PATH;
    the load (PROC) must still be waiting for it before the name appears."""
    partial = Path(f"{path}.partial")
    step = -(-len(data) // pieces)
    for i in range(0, len(data), step):
        with partial.open("ab") as f:
            f.write(data[i:i + step])
        time.sleep(0.15)
    assert proc.poll() is None, "the load ended before its last blob was complete"
    partial.rename(path)


@pytest.mark.parametrize("fmt", ["legacy", "oci"])
def test_a_stand_in_load_reads_its_last_blob_as_it_arrives(tmp_path: Path, fmt: str) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    files, layers = _link(img) if fmt == "oci" else (img.files, {})
    mode = "link" if fmt == "oci" else "gzip"
    # layers 1-2: the second blob is still on its way when the load starts
    arriving = img.blobs[1].path
    data = arriving.read_bytes()
    arriving.unlink()
    partial = ld.partial_config("linux", "amd64", img.diff_ids[:2], img.staging)
    named = {d: layers[d] for d in img.diff_ids[:2]} if layers else {}
    head = ld.load_head(fmt, partial, img.diff_ids[:2], files[:2], named)
    argv = ld.load_argv(docker, img.head_path(), mode, head.blocks, files[:2], img.staging, list(named.items()),
                        head.image_id, stall_s=10)
    with subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdin is not None
        proc.stdin.write(head.data)
        proc.stdin.close()
        _arrive(arriving, data, proc)
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.wait(timeout=30)
    assert proc.returncode == 0, err
    assert ld.parse_loaded(out.decode()) == (head.image_id,)
    assert list(json.loads(state.read_text())["images"]) == [head.image_id]


def test_a_stand_in_load_whose_blob_stops_arriving_loads_nothing(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    arriving = img.blobs[1].path
    data = arriving.read_bytes()
    arriving.unlink()
    Path(f"{arriving}.partial").write_bytes(data[: len(data) // 2])  # then the link is cut
    partial = ld.partial_config("linux", "amd64", img.diff_ids[:2], img.staging)
    head = ld.load_head("legacy", partial, img.diff_ids[:2], img.files[:2])
    started = time.monotonic()
    res = sh(ld.load_argv(docker, img.head_path(), "gzip", head.blocks, img.files[:2], img.staging,
                          standin=head.image_id, stall_s=1), head.data)
    assert res.returncode != 0 and b"no new bytes for 1s" in res.stderr
    assert time.monotonic() - started < 10
    images = json.loads(state.read_text())["images"] if state.exists() else {}
    assert images == {}
    # without a stall limit (the install), a blob that is not staged fails the load at once
    res = sh(ld.load_argv(docker, img.head_path(), "gzip", head.blocks, img.files[:2], img.staging), head.data)
    assert res.returncode != 0


def test_an_install_of_an_image_loaded_already_loads_nothing_and_tags_after_its_checks(tmp_path: Path) -> None:
    img = Image(tmp_path)
    with pytest.raises(ValueError, match="no layers left to load"):
        ld.install_argv(("docker",), img.head_path(), img.id, "t:v", img.staging, cmd.blob_dir(img.staging),
                        img.names, "gzip", 1, img.files[3:], loaded=True)
    args = (("docker",), img.head_path(), img.id, "t:v", img.staging, cmd.blob_dir(img.staging), img.names, "gzip",
            1, [])
    plain, loaded = ld.install_argv(*args), ld.install_argv(*args, loaded=True)
    # the same command but for its TAGGED word ($9), which tells the script to load nothing
    assert [(a, b) for a, b in zip(plain, loaded, strict=True) if a != b] == [("", "loaded")]


def test_an_install_after_a_load_that_named_the_image_asks_docker_nothing_but_the_stand_ins_removal(
        tmp_path: Path) -> None:
    """LOADED and WHOLE: the layer loader's last load made the image, whole, and named REF: the
    install makes no check and no tag (50 and 25 ms after a first ship's last byte), only the clean-up."""
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    args = (docker, img.head_path(), img.id, "t:v", img.staging, cmd.blob_dir(img.staging), img.names, "gzip", 1, [])
    with pytest.raises(ValueError, match="only a load that names REF"):  # neither an earlier load nor this one
        ld.install_argv(*args, whole=True)
    loaded, named = ld.install_argv(*args, loaded=True), ld.install_argv(*args, loaded=True, whole=True)
    assert [(a, b) for a, b in zip(loaded, named, strict=True) if a != b] == [("loaded", "named")]
    head = ld.load_head("legacy", img.config, img.diff_ids, img.files, tags=("t:v",))
    standin = ld.load_head("legacy", ld.partial_config("linux", "amd64", img.diff_ids[:1], img.staging),
                           img.diff_ids[:1], img.files[:1])
    assert sh(ld.load_argv(docker, img.head_path(), "gzip", standin.blocks, img.files[:1], img.staging,
                           standin=standin.image_id), standin.data).returncode == 0
    res = sh(ld.load_argv(docker, img.head_path(), "gzip", head.blocks, img.files, img.staging), head.data)
    assert res.returncode == 0 and ld.loaded_as(res.stdout.decode(), head)
    before = len(calls(state))
    res = sh(named)
    assert res.returncode == 0, res.stderr
    assert ld.parse_install(res.stdout.decode()) == ld.Installed(img.id, img.id)
    assert calls(state)[before:] == ["image rm"]
    after = json.loads(state.read_text())
    assert list(after["images"]) == [img.id] and after["tags"] == {"t:v": img.id}
    assert not list(Path(cmd.blob_dir(img.staging)).iterdir())


def test_loaded_as_takes_the_id_or_every_name_as_docker_prints_it() -> None:
    config = b'{"rootfs":{"diff_ids":[]}}'
    plain = ld.load_head("legacy", config, [], [])
    named = ld.load_head("legacy", config, [], [], tags=("docker.io/library/app:1", "team/app:1"))
    assert ld.loaded_as(f"Loaded image ID: {plain.image_id}\n", plain)
    assert not ld.loaded_as("Loaded image ID: sha256:" + "0" * 64 + "\n", plain)
    assert not ld.loaded_as("Loaded image: app:1\n", plain)  # a name proves nothing without one asked for
    # Docker prints names in their short form, and a name the load moved from another image first
    out = "The image app:1 already exists, renaming the old one with ID sha256:1 to empty string\n" \
          "Loaded image: app:1\nLoaded image: team/app:1\n"
    assert ld.loaded_as(out, named)
    assert not ld.loaded_as("Loaded image: app:1\n", named)  # one name missing
    assert not ld.loaded_as("Loaded image: app:2\nLoaded image: team/app:1\n", named)
    assert ld.loaded_as(f"Loaded image ID: {named.image_id}\n", named)


def test_a_load_reads_a_blob_that_is_still_arriving_in_paced_rounds(tmp_path: Path) -> None:
    """The feed follows a blob's .partial as it grows (a stand-in load started while it lands) by
    measuring it (`wc`) and reading on at most every 20 ms while bytes flow: one that read again at
    once ran wc, tr and head hundreds of times a second while it kept up with the receive."""
    staging = str(tmp_path / "staging")
    raw = os.urandom(400_000)
    diff_id, blob = sha(raw), gzip.compress(raw, mtime=0)
    final = Path(cmd.blob_path(staging, sha(blob), "gzip"))
    final.parent.mkdir(parents=True)
    partial = Path(f"{final}.partial")
    partial.write_bytes(b"")
    docker, state = fake_docker(tmp_path)
    shims, calls_log = tmp_path / "bin", tmp_path / "wc-calls"
    shims.mkdir()
    (shims / "wc").write_text(f'#!/bin/sh\necho x >> {calls_log}\nexec /usr/bin/wc "$@"\n')
    (shims / "wc").chmod(0o755)
    files = [ld.LoadFile(diff_id, str(final), len(raw))]
    config = ld.partial_config("linux", "amd64", [diff_id], staging)
    head, blocks = _head(ld.load_head("legacy", config, [diff_id], files))
    argv = ld.load_argv(docker, cmd.load_head_path(staging, ld.config_id(config)), "gzip", blocks, files, staging,
                        standin=ld.config_id(config), stall_s=10)
    started = time.monotonic()
    load = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"})
    assert load.stdin is not None
    load.stdin.write(head)
    load.stdin.close()
    load.stdin = None  # the head is all it reads from stdin
    writes = 0
    with partial.open("ab") as fh:  # the receive, appending 2 kB at a time
        for i in range(0, len(blob), 2048):
            fh.write(blob[i:i + 2048])
            fh.flush()
            writes += 1
            time.sleep(0.002)
    partial.rename(final)  # checked and named
    out, err = load.communicate(timeout=60)
    elapsed = time.monotonic() - started
    assert load.returncode == 0, err
    assert ld.parse_loaded(out.decode()) == (ld.config_id(config),)
    assert json.loads(state.read_text())["images"]  # the layer was registered, whole
    rounds = len(calls_log.read_text().split())
    assert 0 < rounds <= elapsed / 0.02 + 2, (rounds, elapsed, writes)
    assert rounds < writes / 4, (rounds, writes)
