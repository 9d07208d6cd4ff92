"""The remote argv builders of `deploy ship`: exact argv, parsers, and the scripts run by a real sh."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from receivers import dead_receive

from deployer.commands import ship as cmd
from deployer.commands.layers import parse_content, present_layers_argv
from deployer.tarfmt import Descriptor

STAGING = "/srv/stage"
DIGEST = "sha256:" + "ab" * 32
DOCKER = ("sudo", "docker")


def sh(argv: tuple[str, ...], input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run an argv as the remote sshd would (argv[0] via PATH), locally."""
    return subprocess.run(list(argv), input=input, capture_output=True, check=False)


def test_paths() -> None:
    assert cmd.blob_path(STAGING, DIGEST, "zstd") == f"/srv/stage/blobs/sha256/{'ab' * 32}.zst"
    assert cmd.partial_path(STAGING, DIGEST, "gzip") == f"/srv/stage/blobs/sha256/{'ab' * 32}.gz.partial"
    assert cmd.load_head_path(STAGING, "sha256:" + "cd" * 32) == f"/srv/stage/load-{'cd' * 8}.head"


def test_exact_argv() -> None:
    assert cmd.remove_argv(["/x", "/y"]) == ("rm", "-rf", "--", "/x", "/y")
    assert cmd.tag_argv(DOCKER, "sha256:1", "t:v") == ("sudo", "docker", "tag", "sha256:1", "t:v")
    assert cmd.remove_image_argv(DOCKER, "sha256:1") == ("sudo", "docker", "image", "rm", "sha256:1")
    argv = cmd.pull_install_argv(DOCKER, "r:5000/t:v", "t:v", ["sha256:1", "sha256:2"])
    assert argv[:2] == ("sh", "-c")
    assert argv[3:] == ("sh", "r:5000/t:v", "t:v", "sha256:1 sha256:2", "", "1", "", "", "", "", "", "sudo", "docker")
    argv = cmd.pull_install_argv(DOCKER, "r:5000/t:v", "t:v", ["sha256:1"], pushed="sha256:9")
    assert argv[3:] == ("sh", "r:5000/t:v", "t:v", "sha256:1", "sha256:9", "1", "", "", "", "", "", "sudo", "docker")
    argv = cmd.pull_install_argv(DOCKER, "r:5000/t:v", "t:v", ["sha256:9"], pushed="sha256:9", whole=False,
                                 previous="sha256:8")
    assert argv[3:] == ("sh", "r:5000/t:v", "t:v", "sha256:9", "sha256:9", "0", "sha256:8", "", "", "", "", "sudo",
                        "docker")
    stages = [f"r:5000/t@sha256:{'1' * 64}", f"r:5000/t@sha256:{'2' * 64}"]
    argv = cmd.pull_install_argv(DOCKER, "r:5000/t:v", "t:v", ["sha256:1"], drop=stages)
    assert argv[13:] == (" ".join(stages), "sudo", "docker")  # the stage images pulled ahead go after
    for bad in ("r:5000/t@sha256:1; rm -rf /", "r:5000/t:v", f"$(x)@sha256:{'1' * 64}"):
        with pytest.raises(ValueError):
            cmd.pull_install_argv(DOCKER, "r:5000/t:v", "t:v", ["sha256:1"], drop=[bad])
        with pytest.raises(ValueError):
            cmd.stage_pull_argv(DOCKER, bad)
    assert cmd.stage_pull_argv(DOCKER, stages[0]) == ("sudo", "docker", "pull", stages[0])
    for ok in (f"Registry.Lab:5000/t@sha256:{'3' * 64}", f"[fd00::5]:5000/team/t@sha256:{'4' * 64}"):
        assert cmd.stage_pull_argv(DOCKER, ok)[-1] == ok
    record = ("sha256:" + "d" * 64, Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", DIGEST, 5))
    argv = cmd.pull_install_argv(DOCKER, "r:5000/t:v", "t:v", ["sha256:9"], pushed="sha256:9", whole=False,
                                 content="/srv/stage/content", records=[record], records_from="sha256:9")
    assert argv[10:13] == ("/srv/stage/content", f"{'d' * 64} application/vnd.oci.image.layer.v1.tar+gzip {DIGEST} 5",
                           "sha256:9")
    with pytest.raises(ValueError):
        cmd.pull_install_argv(DOCKER, "r:5000/t:v", "t:v", ["sha256:9"], records_from="sha256:9; rm -rf /")
    with pytest.raises(ValueError):  # records as text: only a dry run's stand-in
        cmd.pull_install_argv(DOCKER, "r:5000/t:v", "t:v", ["sha256:9"], content="/srv/stage/content", records="x")
    with pytest.raises(ValueError):
        cmd.pull_install_argv(DOCKER, "r:5000/t:v", "t:v", ["sha256:1"], pushed="sha256:9; rm -rf /")
    with pytest.raises(ValueError):
        cmd.pull_install_argv(DOCKER, "r:5000/t:v", "t:v", ["sha256:1"], previous="t:old; rm -rf /")
    with pytest.raises(ValueError):
        cmd.pull_install_argv(DOCKER, "r:5000/t:v", "t:v", ["sha256:1 x"])
    assert cmd.break_lock_argv(STAGING) == ("rm", "-rf", "--", "/srv/stage/lock")
    # variable parts are positional args after the constant script, never inside it
    argv = cmd.receive_argv("/a; rm -rf /", "/b", DIGEST, 12)
    assert argv[:2] == ("sh", "-c") and argv[3:] == (cmd.RECEIVER, "/a; rm -rf /", "/b", DIGEST, "12")
    assert cmd.receive_argv("/a", "/b", DIGEST, 12, 5)[3:] == (cmd.RECEIVER, "/a", "/b", DIGEST, "12", "5")
    assert cmd.tag_verify_argv(DOCKER, "sha256:1", "t:v")[3:] == ("sh", "sha256:1", "t:v", "sudo", "docker")


def test_parsers() -> None:
    assert cmd.parse_stat("12 /a b/c\n- /d\n") == {"/a b/c": 12, "/d": None}
    assert cmd.parse_verify("ok sha256:1\n") == cmd.Verified(True, "sha256:1")
    assert cmd.parse_verify("mismatch sha256:2") == cmd.Verified(False, "sha256:2")
    assert cmd.parse_verify("") == cmd.Verified(False, "")
    assert cmd.parse_receive("ok sha256:1\n") == cmd.Received("ok", "sha256:1")
    assert cmd.parse_receive("short 12\n") == cmd.Received("short", "12")
    assert cmd.parse_receive("") == cmd.Received("")
    assert cmd.parse_image_state("content x\nref sha256:1\nknown sha256:2\n") == cmd.ImageState("sha256:1")
    assert cmd.parse_image_state("ref \nknown sha256:2\n") == cmd.ImageState(None)
    assert cmd.parse_image_state("content x\n") is None  # the command stopped before REF's line
    pull = "v1: Pulling from x\na: Already exists\nb: Pull complete\nc: Pull complete\nDigest: sha256:1\n"
    assert cmd.parse_pull(pull) == (2, 1)


def test_lock_parsers() -> None:
    assert cmd.parse_lock("acquired\n").acquired
    owner = {"by": "ann@ws", "pid": 7}
    state = cmd.parse_lock(f"held\nnow 1000\nmtime 400\nowner {json.dumps(owner)}\n")
    assert state == cmd.LockState(False, 600, owner)
    assert cmd.parse_lock("held\nnow 1000\nmtime 0\nowner \n") == cmd.LockState(False, None, None)


def test_receive_hashes_as_it_writes_and_resumes(tmp_path: Path) -> None:
    data = b"0123456789" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    staging = str(tmp_path / "st ag")
    partial, final = cmd.partial_path(staging, digest, "zstd"), cmd.blob_path(staging, digest, "zstd")
    assert cmd.parse_stat(sh(cmd.stat_argv([partial])).stdout.decode()) == {partial: None}
    # the link dropped after 4000 bytes: the host keeps them and says so
    res = sh(cmd.receive_argv(partial, final, digest, len(data)), data[:4000])
    assert res.returncode == 0 and cmd.parse_receive(res.stdout.decode()) == cmd.Received("short", "4000")
    assert cmd.parse_stat(sh(cmd.stat_argv([partial, final])).stdout.decode()) == {partial: 4000, final: None}
    # the next attempt appends the tail; the whole file is checked, then moved into place
    res = sh(cmd.receive_argv(partial, final, digest, len(data)), data[4000:])
    assert cmd.parse_receive(res.stdout.decode()) == cmd.Received("ok", digest)
    assert Path(final).read_bytes() == data and not Path(partial).exists()
    # in one go (hashed while written)
    Path(final).unlink()
    res = sh(cmd.receive_argv(partial, final, digest, len(data)), data)
    assert cmd.parse_receive(res.stdout.decode()) == cmd.Received("ok", digest) and Path(final).exists()
    # verifying a final blob in place keeps it; a partial already moved (a lost reply) checks the final
    assert cmd.parse_verify(sh(cmd.verify_argv(final, digest, final)).stdout.decode()) == cmd.Verified(True, digest)
    assert cmd.parse_verify(sh(cmd.verify_argv(partial, digest, final)).stdout.decode()).ok
    assert Path(final).read_bytes() == data


def test_receive_from_an_offset_takes_the_file_as_the_sender_sees_it(tmp_path: Path) -> None:
    data = b"0123456789" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    partial, final = tmp_path / "b.partial", tmp_path / "b"

    def receive(offset: int, tail: bytes) -> cmd.Received:
        return cmd.parse_receive(sh(cmd.receive_argv(str(partial), str(final), digest, len(data), offset), tail)
                                 .stdout.decode())

    # longer than the offset (a dead receive's last bytes): cut back to it, then appended
    partial.write_bytes(data[:4000] + b"?" * 500)
    assert receive(4000, data[4000:]) == cmd.Received("ok", digest) and final.read_bytes() == data
    # shorter than the offset: nothing taken, the size said, the file as it was
    final.unlink()
    partial.write_bytes(data[:1000])
    assert receive(4000, data[4000:]) == cmd.Received("short", "1000") and partial.read_bytes() == data[:1000]
    # gone, and the blob in place (a dead receive completed it): ok, nothing taken
    partial.rename(final)
    assert receive(4000, data[4000:]) == cmd.Received("ok", digest) and not partial.exists()
    # from zero over whatever was there
    final.unlink()
    partial.write_bytes(b"stale")
    assert receive(0, data) == cmd.Received("ok", digest) and final.read_bytes() == data


def test_a_dead_receive_of_a_file_is_stopped_before_it_is_appended_to_or_moved(tmp_path: Path) -> None:
    growing = tmp_path / "g.growing.partial"
    others = tmp_path / "other.partial"

    stale = dead_receive(cmd.receive_growing_argv(str(growing)), b"x" * 100, growing)
    other = dead_receive(cmd.receive_growing_argv(str(others)), b"x" * 100, others)  # another file's: left alone
    reader = subprocess.Popen(["sh", "-c", "sleep 30", "forwarder", str(growing)], start_new_session=True)  # not a receive
    try:
        res = sh(cmd.receive_growing_argv(str(growing), 60), b"y" * 40)
        assert stale.wait(timeout=10) == -15 and other.poll() is None and reader.poll() is None
        assert growing.read_bytes() == b"x" * 60 + b"y" * 40 and res.stdout.split()[1] == b"100"
        # shorter than the offset: nothing taken or said (the sender resumes it as a .partial)
        res = sh(cmd.receive_growing_argv(str(growing), 500), b"z" * 10)
        assert res.returncode == 0 and res.stdout == b"" and growing.stat().st_size == 100
        # a leftover's move stops a dead receive of its source first (else it appends to the moved file)
        stale = dead_receive(cmd.receive_growing_argv(str(others), 100), b"x" * 100, others, until=200)  # it stopped OTHER
        assert other.wait(timeout=10) == -15
        assert sh(cmd.move_argv(str(others), str(tmp_path / "moved"), leftover=True)).stdout.strip() == b"200"
        assert stale.wait(timeout=10) == -15
    finally:
        for proc in (stale, other, reader):
            proc.kill()


def test_a_growing_blob_is_received_hashed_resumed_and_named(tmp_path: Path) -> None:
    data = b"0123456789" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    staging = str(tmp_path / "st ag")
    growing = cmd.growing_path(staging, "sha256:" + "cd" * 32, "zstd", 3)
    assert growing == f"{staging}/blobs/sha256/{'cd' * 32}.zst3.growing.partial"
    argv = cmd.receive_growing_argv("/a; rm -rf /", 5)
    assert argv[:2] == ("sh", "-c") and argv[3:] == (cmd.RECEIVER, "/a; rm -rf /", "5")
    # from scratch: hashed as it is written, whatever came before at that path
    Path(growing).parent.mkdir(parents=True)
    Path(growing).write_bytes(b"stale")
    res = sh(cmd.receive_growing_argv(growing), data)
    assert res.returncode == 0 and cmd.parse_growing(res.stdout.decode()) == (len(data), digest)
    # a killed ship left 4000 bytes: the rest is appended and the whole file hashed
    Path(growing).write_bytes(data[:4000])
    res = sh(cmd.receive_growing_argv(growing, 4000), data[4000:])
    assert cmd.parse_growing(res.stdout.decode()) == (len(data), digest)
    # named once the sender saw the right size and hash; a repeat after a lost reply is harmless
    final = cmd.blob_path(staging, digest, "zstd")
    for _ in range(2):
        res = sh(cmd.move_argv(growing, final))
        assert res.returncode == 0 and res.stdout.decode().strip() == str(len(data))
    assert Path(final).read_bytes() == data and not Path(growing).exists()
    assert sh(cmd.move_argv(growing, final + ".nothing")).stdout == b""  # nothing to move, no DEST
    assert cmd.parse_growing("got x sha256:1") is None and cmd.parse_growing("") is None


@pytest.mark.parametrize("resumed", [False, True])
def test_receive_deletes_a_complete_but_wrong_blob(tmp_path: Path, resumed: bool) -> None:
    data = b"x" * 100
    partial, final = str(tmp_path / "b.partial"), str(tmp_path / "b")
    if resumed:
        Path(partial).write_bytes(b"y" * 50)  # a bad prefix from an earlier attempt
    res = sh(cmd.receive_argv(partial, final, DIGEST, 100), data[50:] if resumed else data)
    got = cmd.parse_receive(res.stdout.decode())
    wrong = b"y" * 50 + data[50:] if resumed else data
    assert got == cmd.Received("mismatch", "sha256:" + hashlib.sha256(wrong).hexdigest())
    assert not Path(partial).exists() and not Path(final).exists()
    # more bytes than the blob has: wrong too
    res = sh(cmd.receive_argv(partial, final, "sha256:" + hashlib.sha256(data).hexdigest(), 100), data + b"!")
    assert cmd.parse_receive(res.stdout.decode()).status == "mismatch" and not Path(final).exists()


def test_verify_mismatch_deletes(tmp_path: Path) -> None:
    bad = tmp_path / "x.partial"
    bad.write_bytes(b"tampered")
    out = cmd.parse_verify(sh(cmd.verify_argv(str(bad), DIGEST, str(tmp_path / "x"))).stdout.decode())
    assert out == cmd.Verified(False, "sha256:" + hashlib.sha256(b"tampered").hexdigest())
    assert not bad.exists() and not (tmp_path / "x").exists()


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
    res = sh(present_layers_argv(docker, "", (), "t:v"))  # the listing after it fails: REF's line is there
    assert cmd.parse_image_state(res.stdout.decode()) == cmd.ImageState("sha256:aaa")
    res = sh(present_layers_argv(docker, "", (), "t:w"))
    assert cmd.parse_image_state(res.stdout.decode()) == cmd.ImageState(None)
    res = sh(cmd.tag_verify_argv(docker, "sha256:aaa", "t:v"))
    assert res.stdout.decode().strip() == "sha256:aaa"
    assert (tmp_path / "tags").read_text() == "sha256:aaa t:v\n"


def _fake_pulling_docker(tmp_path: Path, pulled: str, layers: int, tag_to: str | None = None,
                         tag_fails: bool = False) -> str:
    """A stand-in `docker`: pull prints a layer line, inspect answers PULLED (or, for t:v once
    tagged, TAG_TO or what was tagged) with LAYERS layers; tag and rmi calls are recorded (a tag
    fails if TAG_FAILS)."""
    fake = tmp_path / "docker"
    tag = "echo no such image >&2; exit 1" if tag_fails else f'echo "$2 $3" >> {tmp_path}/tags; exit 0'
    fake.write_text(
        '#!/bin/sh\n'
        f'echo "$1" >> {tmp_path}/calls\n'
        'case "$1" in\n'
        '  pull) echo "abc: Pull complete"; echo "Digest: sha256:ppp"; exit 0 ;;\n'
        f'  tag) {tag} ;;\n'
        f'  rmi) echo "rmi $2" >> {tmp_path}/tags; exit 0 ;;\n'
        'esac\n'
        # an incomplete image (no layers) fails a format that counts them, as the containerd store's does
        f'if [ "$4" = "{{{{.Id}}}} {{{{len .RootFS.Layers}}}}" ]; then [ {layers} -gt 0 ] || exit 1; '
        f'echo {pulled} {layers}; exit 0; fi\n'
        f'if [ "$4" = "{{{{len .RootFS.Layers}}}}" ]; then [ {layers} -gt 0 ] || exit 1; echo {layers}; exit 0; fi\n'
        f'if [ "$5" = "t:v" ]; then [ -s {tmp_path}/tags ] || exit 1; '
        f'echo {tag_to or pulled}; exit 0; fi\n'
        f'echo {pulled}\n')
    fake.chmod(0o755)
    return str(fake)


@pytest.mark.parametrize(("pulled", "layers", "tag_to", "code"), [
    ("sha256:aaa", 2, None, 0),  # the likeliest id: all done
    ("sha256:bbb", 2, None, cmd.PULLED_ANOTHER_ID),  # another of the ids: done, but steps after it must not run
    ("sha256:ccc", 2, None, 3),  # not the image
    ("sha256:aaa", 0, None, 8),  # incomplete (moby#49784): never tagged
    # a tag that succeeded names the id; REF is not read back (that would only race with whoever
    # tags it next), so another image REF names right after the tag goes unnoticed
    ("sha256:aaa", 2, "sha256:zzz", 0),
])
def test_pull_install_script_with_a_fake_docker(tmp_path: Path, pulled: str, layers: int, tag_to: str | None,
                                                code: int) -> None:
    docker = (_fake_pulling_docker(tmp_path, pulled, layers, tag_to),)
    res = sh(cmd.pull_install_argv(docker, "r:5000/t:v", "t:v", ["sha256:aaa", "sha256:bbb"]))
    assert res.returncode == code, res.stderr
    out = res.stdout.decode()
    assert cmd.parse_pull(out) == (1, 0)
    tagged = (tmp_path / "tags").read_text() if (tmp_path / "tags").exists() else ""
    assert tagged == ("" if code in (3, 8) else f"{pulled} t:v\n")
    assert cmd.parse_pulled(out) == (pulled, None if code in (3, 8) else pulled)


def test_a_pull_of_the_pushed_manifest_on_the_classic_store_is_not_inspected(tmp_path: Path) -> None:
    """The pushed manifest names the image's config, whose digest is the classic store's image id;
    the classic store's images are never incomplete: one docker call less than inspecting."""
    docker = (_fake_pulling_docker(tmp_path, "sha256:zzz", 2),)  # what an inspect would say: never asked
    res = sh(cmd.pull_install_argv(docker, "r:5000/t:v", "t:v", ["sha256:aaa"], pushed="sha256:ppp"))
    assert res.returncode == 0, res.stderr
    assert cmd.parse_pulled(res.stdout.decode()) == ("sha256:aaa", "sha256:aaa")
    assert (tmp_path / "calls").read_text().split() == ["pull", "tag"]
    # another manifest under the tag (someone pushed meanwhile): inspected, and refused
    (tmp_path / "calls").unlink()
    res = sh(cmd.pull_install_argv(docker, "r:5000/t:v", "t:v", ["sha256:aaa"], pushed="sha256:qqq"))
    assert res.returncode == 3 and (tmp_path / "calls").read_text().split() == ["pull", "image"]


@pytest.mark.parametrize(("layers", "previous", "tag_fails", "code", "tags"), [
    (2, "", False, 0, "sha256:ppp t:v\n"),  # complete: tagged
    (0, "sha256:old", False, 8, "sha256:ppp t:v\nsha256:old t:v\n"),  # incomplete: REF names what it did before
    (0, "", False, 8, "sha256:ppp t:v\nrmi t:v\n"),  # incomplete, REF new: it goes again
    (2, "", True, 7, ""),  # the tag failed
])
def test_a_pull_of_the_pushed_manifest_on_the_containerd_store_counts_its_layers_beside_the_tag(
        tmp_path: Path, layers: int, previous: str, tag_fails: bool, code: int, tags: str) -> None:
    """The containerd store's id is the pushed manifest's digest, so the pull's digest line names
    the id; the image may still be incomplete (moby#49784): its layers are counted while REF is
    tagged (one docker call's time, not two), and a tag of an incomplete image is taken back."""
    docker = (_fake_pulling_docker(tmp_path, "sha256:zzz", layers, tag_fails=tag_fails),)
    content = tmp_path / "content"
    content.mkdir()
    kept = Descriptor("application/vnd.oci.image.layer.v1.tar+zstd", "sha256:" + "e" * 64, 7)
    (content / ("1" * 64)).write_text(f"{kept.media_type} {kept.digest} {kept.size}\n")  # a load's record
    pulled = [(f"sha256:{c * 64}", Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", f"sha256:{c * 64}", 9))
              for c in "12"]
    res = sh(cmd.pull_install_argv(docker, "r:5000/t:v", "t:v", ["sha256:ppp", "sha256:cfg"], pushed="sha256:ppp",
                                   whole=False, previous=previous, content=str(content), records=pulled,
                                   records_from="sha256:ppp"))
    assert res.returncode == code, res.stderr
    # a complete pull records the pushed blob of each layer that had no record; else nothing
    recorded = parse_content("".join(f"content {p.name} {p.read_text()}" for p in content.iterdir()))
    assert recorded == ({"sha256:" + "1" * 64: kept, **dict(pulled[1:])} if code == 0 else
                        {"sha256:" + "1" * 64: kept})
    out = res.stdout.decode()
    assert cmd.parse_pulled(out) == ("sha256:ppp", "sha256:ppp" if code == 0 else None)
    assert ((tmp_path / "tags").read_text() if (tmp_path / "tags").exists() else "") == tags
    calls = (tmp_path / "calls").read_text().split()
    assert calls[0] == "pull" and sorted(calls[1:3]) == ["image", "tag"]  # no inspect for the id
    # another manifest under the tag (someone pushed meanwhile): inspected for the id, and refused
    for f in ("calls", "tags"):
        (tmp_path / f).unlink(missing_ok=True)
    res = sh(cmd.pull_install_argv(docker, "r:5000/t:v", "t:v", ["sha256:qqq"], pushed="sha256:qqq", whole=False))
    assert res.returncode == 3 and not (tmp_path / "tags").exists()


def test_a_pull_inspected_for_its_id_records_the_blobs_only_of_the_manifest_they_came_from(tmp_path: Path) -> None:
    """A containerd-store workstation's push names no digest (the manifest read back is found by
    the tag): the pulled image's id (the digest pulled, on the containerd store) tells whether the
    records describe it."""
    docker = (_fake_pulling_docker(tmp_path, "sha256:aaa", 2),)
    record = [("sha256:" + "1" * 64, Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "sha256:" + "2" * 64, 9))]
    for source, written in (("sha256:aaa", True), ("sha256:bbb", False)):
        content = tmp_path / f"content-{source[7:]}"
        res = sh(cmd.pull_install_argv(docker, "r:5000/t:v", "t:v", ["sha256:aaa"], whole=False,
                                       content=str(content), records=record, records_from=source))
        assert res.returncode == 0, res.stderr
        assert (content / ("1" * 64)).exists() is written


def test_prepare_runs_only_while_the_lock_is_the_tokens(tmp_path: Path) -> None:
    staging = tmp_path / "st"
    (staging / "load").mkdir(parents=True)  # another deploy's load in progress: must stay
    res = sh(cmd.prepare_argv(str(staging), "tok-1"))
    assert res.returncode == cmd.NOT_LOCKED and (staging / "load").exists()
    assert cmd.parse_lock(sh(cmd.lock_argv(str(staging), json.dumps({"token": "tok-1"}))).stdout.decode()).acquired
    assert sh(cmd.prepare_argv(str(staging), "tok-2")).returncode == cmd.NOT_LOCKED
    assert sh(cmd.prepare_argv(str(staging), "tok-1")).returncode == 0 and not (staging / "load").exists()


def test_prepare_makes_the_blob_dir_and_lists_the_blobs(tmp_path: Path) -> None:
    staging = tmp_path / "st"
    (staging / "load" / "old").mkdir(parents=True)  # an older version's load dir
    (staging / f"load-{'a' * 16}.head").write_bytes(b"x")  # a killed ship's tar head
    res = sh(cmd.prepare_argv(str(staging)))
    blobs = Path(cmd.blob_dir(str(staging)))
    assert res.returncode == 0 and res.stdout == b"" and blobs.is_dir()
    assert sorted(p.name for p in staging.iterdir()) == ["blobs"]
    (blobs / "a.zst").write_bytes(b"12345")
    (blobs / "b.zst.partial").write_bytes(b"")
    (blobs / "sub").mkdir()
    out = cmd.parse_stat(sh(cmd.prepare_argv(str(staging))).stdout.decode())
    assert out == {f"{blobs}/a.zst": 5, f"{blobs}/b.zst.partial": 0}


def test_receive_hashes_with_sha256sum_where_there_is_no_openssl(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "tee", "wc", "tr", "mkdir", "mv", "rm", "cat", "sha256sum"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    data = b"abc" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    partial, final = str(tmp_path / "b.partial"), str(tmp_path / "b")
    argv = cmd.receive_argv(partial, final, digest, len(data))
    res = subprocess.run([str(bin_dir / "sh"), *argv[1:]], input=data, capture_output=True,
                         env={"PATH": str(bin_dir)}, check=False)
    assert cmd.parse_receive(res.stdout.decode()) == cmd.Received("ok", digest), res.stderr
