"""The remote argv builders of `deploy ship`: exact argv, parsers, and the scripts run by a real sh."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from deployer.commands import ship as cmd

STAGING = "/srv/stage"
DIGEST = "sha256:" + "ab" * 32
DOCKER = ("sudo", "docker")


def sh(argv: tuple[str, ...], input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run an argv as the remote sshd would (argv[0] via PATH), locally."""
    return subprocess.run(list(argv), input=input, capture_output=True, check=False)


def test_paths() -> None:
    assert cmd.blob_path(STAGING, DIGEST, "zstd") == f"/srv/stage/blobs/sha256/{'ab' * 32}.zst"
    assert cmd.partial_path(STAGING, DIGEST, "gzip") == f"/srv/stage/blobs/sha256/{'ab' * 32}.gz.partial"
    assert cmd.load_dir(STAGING, "sha256:" + "cd" * 32) == f"/srv/stage/load/{'cd' * 32}"
    assert cmd.layer_path("/l", "sha256:" + "ef" * 32) == f"/l/{'ef' * 32}/layer.tar"


def test_exact_argv() -> None:
    assert cmd.append_argv("/a b/x") == ("sh", "-c", 'mkdir -p -- "${1%/*}" && cat >> "$1"', "sh", "/a b/x")
    assert cmd.remove_argv(["/x", "/y"]) == ("rm", "-rf", "--", "/x", "/y")
    assert cmd.tag_argv(DOCKER, "sha256:1", "t:v") == ("sudo", "docker", "tag", "sha256:1", "t:v")
    assert cmd.inspect_id_argv(DOCKER, "t:v") == ("sudo", "docker", "image", "inspect", "--format", "{{.Id}}", "t:v")
    assert cmd.remove_image_argv(DOCKER, "sha256:1") == ("sudo", "docker", "image", "rm", "sha256:1")
    assert cmd.pull_argv(("docker",), "r:5000/t:v") == ("docker", "pull", "r:5000/t:v")
    assert cmd.break_lock_argv(STAGING) == ("rm", "-rf", "--", "/srv/stage/lock")
    # variable parts are positional args after the constant script, never inside it
    blob = f"/s/blobs/sha256/{'ab' * 32}.zst"
    argv = cmd.install_argv(DOCKER, "/l; rm -rf /", "sha256:1", "t:v", "zstd", [(blob, "/l/x/layer.tar", "sha256:2")])
    assert argv[:2] == ("sh", "-c")
    assert argv[3:] == ("sh", "/l; rm -rf /", "sha256:1", "t:v", "zstd", "1", blob, "/l/x/layer.tar", "sha256:2",
                        "sudo", "docker")
    with pytest.raises(ValueError):
        cmd.install_argv(DOCKER, "/l", "sha256:1", "t:v", "lz4", [])
    with pytest.raises(ValueError):  # the cleanup word-splits blob names: only hex.zst / hex.gz
        cmd.install_argv(DOCKER, "/l", "sha256:1", "t:v", "link", [("/s/a b*.zst", "/l/x", "sha256:2")])
    assert cmd.unpack_argv("/l")[3:] == ("sh", "/l")
    assert cmd.tag_verify_argv(DOCKER, "sha256:1", "t:v")[3:] == ("sh", "sha256:1", "t:v", "sudo", "docker")
    argv = cmd.image_state_argv(DOCKER, "t:v", "sha256:1")
    assert argv[3:] == ("sh", "t:v", "sha256:1", "sudo", "docker")


def test_parsers() -> None:
    assert cmd.parse_stat("12 /a b/c\n- /d\n") == {"/a b/c": 12, "/d": None}
    assert cmd.parse_verify("ok sha256:1\n") == cmd.Verified(True, "sha256:1")
    assert cmd.parse_verify("mismatch sha256:2") == cmd.Verified(False, "sha256:2")
    assert cmd.parse_verify("") == cmd.Verified(False, "")
    assert cmd.parse_install("loaded sha256:1\ntagged sha256:1\n") == cmd.Installed(None, "sha256:1", "sha256:1")
    assert cmd.parse_install("badlayer sha256:2 sha256:3\n") == cmd.Installed(("sha256:2", "sha256:3"), None, None)
    assert cmd.parse_install("loaded \n") == cmd.Installed(None, None, None)
    assert cmd.parse_loaded("Loaded image ID: sha256:1\nLoaded image: t:v\n") == ("sha256:1", "t:v")
    assert cmd.parse_image_state("ref sha256:1\nid sha256:1\n") == cmd.ImageState("sha256:1", True)
    assert cmd.parse_image_state("ref \nid \n") == cmd.ImageState(None, False)
    pull = "v1: Pulling from x\na: Already exists\nb: Pull complete\nc: Pull complete\nDigest: sha256:1\n"
    assert cmd.parse_pull(pull) == (2, 1)


def test_lock_parsers() -> None:
    assert cmd.parse_lock("acquired\n").acquired
    owner = {"by": "ann@ws", "pid": 7}
    state = cmd.parse_lock(f"held\nnow 1000\nmtime 400\nowner {json.dumps(owner)}\n")
    assert state == cmd.LockState(False, 600, owner)
    assert cmd.parse_lock("held\nnow 1000\nmtime 0\nowner \n") == cmd.LockState(False, None, None)


def test_stat_append_verify_really_run(tmp_path: Path) -> None:
    data = b"0123456789" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    staging = str(tmp_path / "st ag")
    partial, final = cmd.partial_path(staging, digest, "zstd"), cmd.blob_path(staging, digest, "zstd")
    assert cmd.parse_stat(sh(cmd.stat_argv([partial])).stdout.decode()) == {partial: None}
    assert sh(cmd.append_argv(partial), data[:4000]).returncode == 0
    assert cmd.parse_stat(sh(cmd.stat_argv([partial, final])).stdout.decode()) == {partial: 4000, final: None}
    assert sh(cmd.append_argv(partial), data[4000:]).returncode == 0
    verified = cmd.parse_verify(sh(cmd.verify_argv(partial, digest, final)).stdout.decode())
    assert verified == cmd.Verified(True, digest)
    assert Path(final).read_bytes() == data and not Path(partial).exists()
    # verifying a final blob in place keeps it
    assert cmd.parse_verify(sh(cmd.verify_argv(final, digest, final)).stdout.decode()).ok
    assert Path(final).exists()
    # retry-safe: the partial was already moved (a lost reply): the final blob is checked instead
    assert cmd.parse_verify(sh(cmd.verify_argv(partial, digest, final)).stdout.decode()).ok
    assert Path(final).read_bytes() == data


def test_verify_mismatch_deletes(tmp_path: Path) -> None:
    bad = tmp_path / "x.partial"
    bad.write_bytes(b"tampered")
    out = cmd.parse_verify(sh(cmd.verify_argv(str(bad), DIGEST, str(tmp_path / "x"))).stdout.decode())
    assert out == cmd.Verified(False, "sha256:" + hashlib.sha256(b"tampered").hexdigest())
    assert not bad.exists() and not (tmp_path / "x").exists()


def _installer(tmp_path: Path, image_id: str) -> tuple[str, ...]:
    """A stand-in `docker` for the install script: load lists the tar, inspect knows image_id."""
    fake = tmp_path / "fake-docker"
    fake.write_text(
        "#!/bin/sh\n"
        f'case "$1" in\n'
        f'  load) tar -tf - | sort > {tmp_path}/loaded.txt; echo "Loaded image ID: {image_id}" ;;\n'
        f'  image) if [ -f {tmp_path}/loaded.txt ] && [ "$5" = "{image_id}" ] '
        f'|| grep -q " $5$" {tmp_path}/tags 2>/dev/null; then echo {image_id}; else exit 1; fi ;;\n'
        f'  tag) echo "$2 $3" >> {tmp_path}/tags ;;\n'
        "esac\n")
    fake.chmod(0o755)
    return (str(fake),)


def _staged(tmp_path: Path, raw: bytes, suffix: str, data: bytes) -> tuple[str, str]:
    blobs = tmp_path / "staging" / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    path = blobs / f"{hashlib.sha256(data).hexdigest()}.{suffix}"
    path.write_bytes(data)
    return str(path), "sha256:" + hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("mode", ["link", "gzip"])
def test_install_script_loads_cleans_and_tags(tmp_path: Path, mode: str) -> None:
    image_id = "sha256:" + "9" * 64
    raw = b"layer-bytes" * 500
    src, diff = _staged(tmp_path, raw, "gz", gzip.compress(raw))
    load = str(tmp_path / "staging" / "load" / "x")
    Path(load).mkdir(parents=True)
    Path(load, "manifest.json").write_text("[]")
    dst = cmd.layer_path(load, diff)
    res = sh(cmd.install_argv(_installer(tmp_path, image_id), load, image_id, "t:v", mode, [(src, dst, diff)]))
    assert res.returncode == 0, res.stderr
    assert cmd.parse_install(res.stdout.decode()) == cmd.Installed(None, image_id, image_id)
    assert (tmp_path / "loaded.txt").read_text().split() == sorted(
        ["./", "./manifest.json", f"./{diff[7:]}/", f"./{diff[7:]}/layer.tar"])
    assert (tmp_path / "tags").read_text() == f"{image_id} t:v\n"
    assert not Path(load).exists() and not Path(src).exists()  # staging cleaned after the verified load
    # retry-safe: run again (as after a lost reply) with the blobs gone: no load, just the tag
    (tmp_path / "loaded.txt").write_text("marker")
    res = sh(cmd.install_argv(_installer(tmp_path, image_id), load, image_id, "t:v", mode, [(src, dst, diff)]))
    assert res.returncode == 0, res.stderr
    assert cmd.parse_install(res.stdout.decode()) == cmd.Installed(None, image_id, image_id)
    assert (tmp_path / "loaded.txt").read_text() == "marker"


def test_install_script_refuses_a_bad_layer_and_a_wrong_id(tmp_path: Path) -> None:
    image_id = "sha256:" + "9" * 64
    raw = b"x" * 1000
    src, diff = _staged(tmp_path, raw, "gz", gzip.compress(raw))
    load = str(tmp_path / "load")
    wrong = "sha256:" + "1" * 64
    res = sh(cmd.install_argv(_installer(tmp_path, image_id), load, image_id, "t:v", "gzip",
                              [(src, cmd.layer_path(load, wrong), wrong)]))
    assert res.returncode == 4
    assert cmd.parse_install(res.stdout.decode()).bad_layer == (wrong, diff)
    assert Path(src).exists() and not (tmp_path / "tags").exists()
    # docker load that yields another image: exit 6, nothing tagged, blobs kept for a retry
    res = sh(cmd.install_argv(_installer(tmp_path, wrong), load, image_id, "t:v", "link",
                              [(src, cmd.layer_path(load, diff), diff)]))
    assert res.returncode == 6 and Path(src).exists() and not (tmp_path / "tags").exists()


def test_unpack_replaces_the_load_dir(tmp_path: Path) -> None:
    import io
    import tarfile

    load = tmp_path / "load"
    (load / "old").mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"[]"))
    assert sh(cmd.unpack_argv(str(load)), buf.getvalue()).returncode == 0
    assert sorted(p.name for p in load.iterdir()) == ["manifest.json"]


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd binary not installed")
def test_install_zstd_failure_shows_as_a_bad_layer(tmp_path: Path) -> None:
    src, _ = _staged(tmp_path, b"", "zst", b"not zstd at all")
    diff = "sha256:" + "2" * 64
    load = str(tmp_path / "load")
    res = sh(cmd.install_argv(("false",), load, "sha256:1", "t:v", "zstd", [(src, cmd.layer_path(load, diff), diff)]))
    # no pipefail: the failure surfaces as the hash of empty output, with zstd's stderr
    assert res.returncode == 4 and res.stderr
    assert cmd.parse_install(res.stdout.decode()).bad_layer == (diff, "sha256:" + hashlib.sha256(b"").hexdigest())


def test_lock_script_really_run(tmp_path: Path) -> None:
    staging = str(tmp_path / "s")
    mine = json.dumps({"by": "me@ws", "token": "t-1"})
    assert cmd.parse_lock(sh(cmd.lock_argv(staging, mine)).stdout.decode()).acquired
    other = cmd.parse_lock(sh(cmd.lock_argv(staging, json.dumps({"token": "t-2"}))).stdout.decode())
    assert not other.acquired and other.owner == {"by": "me@ws", "token": "t-1"}
    assert other.age_s is not None and other.age_s < 60
    sh(cmd.unlock_argv(staging, "t-2"))  # not ours: stays
    assert (tmp_path / "s" / "lock").exists()
    sh(cmd.unlock_argv(staging, "t-1"))
    assert not (tmp_path / "s" / "lock").exists()


def _fake_docker(tmp_path: Path) -> str:
    """A stand-in `docker` that knows one tag (t:v -> sha256:aaa) and records tag calls."""
    fake = tmp_path / "docker"
    fake.write_text(
        '#!/bin/sh\n'
        f'if [ "$1" = tag ]; then echo "$2 $3" >> {tmp_path}/tags; exit 0; fi\n'
        '[ "$5" = "t:v" ] && { echo sha256:aaa; exit 0; }\n'
        'echo "No such image" >&2; exit 1\n')
    fake.chmod(0o755)
    return str(fake)


def test_image_state_and_tag_scripts_with_a_fake_docker(tmp_path: Path) -> None:
    docker = (_fake_docker(tmp_path),)
    res = sh(cmd.image_state_argv(docker, "t:v", "sha256:bbb"))
    assert cmd.parse_image_state(res.stdout.decode()) == cmd.ImageState("sha256:aaa", False)
    res = sh(cmd.tag_verify_argv(docker, "sha256:aaa", "t:v"))
    assert res.stdout.decode().strip() == "sha256:aaa"
    assert (tmp_path / "tags").read_text() == "sha256:aaa t:v\n"


def test_unpack_layer_checks_the_diff_id_and_install_reuses_it(tmp_path: Path) -> None:
    image_id = "sha256:" + "9" * 64
    raw = b"layer-bytes" * 500
    src, diff = _staged(tmp_path, raw, "gz", gzip.compress(raw))
    load = tmp_path / "staging" / "load" / "x"
    load.mkdir(parents=True)
    (load / "manifest.json").write_text("[]")
    dst = cmd.layer_path(str(load), diff)
    wrong = "sha256:" + "1" * 64
    res = sh(cmd.unpack_layer_argv("gzip", src, cmd.layer_path(str(load), wrong), wrong))
    assert res.returncode == 4 and cmd.parse_install(res.stdout.decode()).bad_layer == (wrong, diff)
    assert not list((load / wrong[7:]).iterdir())  # no half-written layer left behind
    res = sh(cmd.unpack_layer_argv("gzip", src, dst, diff))
    assert res.returncode == 0 and res.stdout.decode().split() == ["unpacked", diff]
    assert Path(dst).read_bytes() == raw
    # install trusts an unpacked layer (it only appears after its check): the blob is not read again
    Path(src).write_bytes(b"no longer gzip")
    res = sh(cmd.install_argv(_installer(tmp_path, image_id), str(load), image_id, "t:v", "gzip", [(src, dst, diff)]))
    assert res.returncode == 0, res.stderr
    assert cmd.parse_install(res.stdout.decode()) == cmd.Installed(None, image_id, image_id)
    with pytest.raises(ValueError):
        cmd.unpack_layer_argv("link", src, dst, diff)


def _tar_docker(tmp_path: Path) -> tuple[str, ...]:
    """A stand-in `docker` whose load unpacks its stdin tar (strictly) into tmp_path/out."""
    fake = tmp_path / "tar-docker"
    out = tmp_path / "out"
    fake.write_text(f'#!/bin/sh\n[ "$1" = load ] || exit 1\nmkdir -p {out} && tar -xf - -C {out} && echo loaded-ok\n')
    fake.chmod(0o755)
    return (str(fake),)


def test_load_stream_feeds_docker_load_a_tar_of_the_named_files(tmp_path: Path) -> None:
    load = tmp_path / "load"
    (load / ("d" * 64)).mkdir(parents=True)
    files = {"manifest.json": b"[]", "c.json": b'{"x": 1}' * 100, f"{'d' * 64}/layer.tar": bytes(range(256)) * 7}
    for name, data in files.items():
        (load / name).write_bytes(data)
    lines = b"".join(cmd.load_stream_line(n, len(d)) for n, d in files.items())
    res = sh(cmd.load_stream_argv(_tar_docker(tmp_path), str(load)), lines + cmd.LOAD_STREAM_END)
    assert res.returncode == 0 and res.stdout == b"loaded-ok\n", res.stderr
    for name, data in files.items():
        assert (tmp_path / "out" / name).read_bytes() == data
    # the client gave up before the end: docker load must not see a well-formed tar
    res = sh(cmd.load_stream_argv(_tar_docker(tmp_path), str(load)), lines)
    assert res.returncode != 0 and b"loaded-ok" not in res.stdout
    for bad in ("../x y", ".", "a b"):
        with pytest.raises(ValueError):
            cmd.load_stream_line(bad, 1)
    with pytest.raises(ValueError):
        cmd.load_stream_line("big/layer.tar", 8 << 30)  # ustar cannot say 8 GiB: the caller loads the usual way


def test_prepare_empties_the_load_dir_and_lists_the_blobs(tmp_path: Path) -> None:
    load, blobs = tmp_path / "load", tmp_path / "blobs"
    (load / "old").mkdir(parents=True)
    res = sh(cmd.prepare_argv(str(load), str(blobs)))
    assert res.returncode == 0 and res.stdout == b"" and load.is_dir() and not list(load.iterdir())
    (blobs / "a.zst").write_bytes(b"12345")
    (blobs / "b.zst.partial").write_bytes(b"")
    (blobs / "sub").mkdir()
    out = cmd.parse_stat(sh(cmd.prepare_argv(str(load), str(blobs))).stdout.decode())
    assert out == {f"{blobs}/a.zst": 5, f"{blobs}/b.zst.partial": 0}
    # the seed extracts next to layers already unpacked there
    (load / "x").write_text("kept")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"[]"))
    assert sh(cmd.extract_argv(str(load)), buf.getvalue()).returncode == 0
    assert sorted(p.name for p in load.iterdir()) == ["manifest.json", "x"]
