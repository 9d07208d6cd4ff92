"""Origin pull (issue 19), the pure and local parts: finding the base, planning which layers a host
pulls from the base's registry, the remote pull script, and the pull's outcome as the sender sees it.
The whole ship against a real registry is in tests/integration/test_origin.py."""
from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from test_ship_plan import IMAGE, NONE, SIZES, D, facts, host

from deployer.chain import chain_ids
from deployer.commands import ship as cmd
from deployer.local.fake import FakeClient
from deployer.local.image import pick_base, pulled_base
from deployer.ship import origin, steps
from deployer.ship.conn import HostConn
from deployer.ship.origin import Origin
from deployer.ship.plan import make_plan, pulled_from_origin
from deployer.ship.route import Leg, OriginPull, OriginPullFailed
from deployer.ship.tarball import Counter
from deployer.tarfmt import Descriptor
from deployer.transport.fake import FakeSession

BASE_REF = "nvcr.io/nvidia/pytorch@sha256:" + "a" * 64
BLOBS = (Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "sha256:" + "b" * 64, 10),
         Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "sha256:" + "c" * 64, 20))
ORIGIN = Origin(BASE_REF, "nvcr.io", 2, "sha256:" + "7" * 64, BLOBS)


def _attrs(layers: tuple[str, ...], digests: list[str], image_id: str = "sha256:" + "9" * 64) -> dict:
    return {"Id": image_id, "RootFS": {"Layers": list(layers)}, "RepoDigests": digests}


def test_the_base_is_the_longest_pulled_run_of_bottom_layers() -> None:
    short = _attrs(D[:1], ["r/a@sha256:" + "1" * 64])
    longer = _attrs(D[:2], ["r/b@sha256:" + "2" * 64, "r/b2@sha256:" + "3" * 64])
    built_here = _attrs(D[:3], [])  # no repo digest: not pulled from anywhere
    other = _attrs(("sha256:" + "e" * 64,), ["r/c@sha256:" + "4" * 64])
    whole = _attrs(D, ["r/d@sha256:" + "5" * 64])  # the image itself: its own layers go as shipping decides
    picked = pick_base(D, [short, built_here, longer, other, whole])
    assert picked is not None and picked[0] is longer and picked[1] == "r/b2@sha256:" + "3" * 64
    assert pick_base(D, [built_here, other, whole]) is None


def test_pulled_base_reads_the_local_docker() -> None:
    fake = FakeClient()
    fake.add_image("trainer:v3", IMAGE.id, diff_ids=D)
    fake.add_image("nvcr.io/nvidia/pytorch:24.01", "sha256:" + "7" * 64, diff_ids=D[:2], repo_digests=[BASE_REF])
    base = pulled_base(IMAGE, fake)  # type: ignore[arg-type]
    assert base is not None and (base.repo_digest, base.layers, base.config_digest) == (BASE_REF, 2, "sha256:" + "7" * 64)


def test_the_registrys_blobs_are_read_from_the_manifest_or_left_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    bare = dataclasses.replace(ORIGIN, blobs=())
    docker_types = [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": d.digest,
                     "size": d.size} for d in BLOBS]
    asked: list[tuple[str, str]] = []

    def manifest(reader: object, digest: str, config: str) -> dict:
        asked.append((digest, config))
        return {"layers": docker_types}

    monkeypatch.setattr(origin, "image_manifest", manifest)
    fake = FakeClient()
    assert origin.with_blobs(bare, fake) == ORIGIN  # Docker's media types named as an OCI load names them
    assert asked == [(BASE_REF.split("@")[1], ORIGIN.config_digest)]  # the child for the base's own config

    def unreadable(*_: object) -> dict:
        raise origin.RegistryAPIError("nvcr.io not reachable")

    monkeypatch.setattr(origin, "image_manifest", unreadable)
    assert origin.with_blobs(bare, fake) == bare
    monkeypatch.setattr(origin, "image_manifest", lambda *_: {"layers": docker_types[:1]})  # another image
    assert origin.with_blobs(bare, fake) == bare


def test_the_host_pulls_the_base_layers_it_lacks_when_it_reaches_the_registry() -> None:
    assert pulled_from_origin(ORIGIN, (0, 1, 2, 3), "overlay2", True) == ((0, 1), "")
    assert pulled_from_origin(ORIGIN, (1, 2, 3), "overlay2", True) == ((1,), "")
    assert pulled_from_origin(ORIGIN, (2, 3), "overlay2", True) == ((), "")  # it has the base
    assert pulled_from_origin(None, (0, 1), "overlay2", True) == ((), "")
    assert pulled_from_origin(ORIGIN, (0, 1), "overlay2", False) == ((), "the host cannot reach nvcr.io")
    assert pulled_from_origin(ORIGIN, (0, 1), "overlay2", None)[1] == "the host was not checked for nvcr.io"
    # an OCI load names the pulled layers by the registry's blobs: without them, the base is sent
    unknown = dataclasses.replace(ORIGIN, blobs=())
    assert pulled_from_origin(unknown, (0, 1), "containerd", True)[0] == ()
    assert pulled_from_origin(unknown, (0, 1), "overlay2", True)[0] == (0, 1)


def test_plan_sends_only_the_layers_above_the_base() -> None:
    p = make_plan(host(), IMAGE, dataclasses.replace(facts(), origin_reachable=True), NONE, frozenset(), SIZES,
                  "tarball", origin=ORIGIN)
    assert (p.missing, p.from_origin, p.origin) == ((2, 3), (0, 1), BASE_REF)
    assert "2 base layer(s) pulled by the host from nvcr.io" in p.reason
    assert p.raw_bytes == 200  # only what is sent needs staging room
    [pull, prepare] = steps.transfer_steps(p, host())[:2]
    assert pull.argv == cmd.origin_pull_argv(("docker",), BASE_REF) and prepare.label == "preparing the staging dir"
    # an air-gapped host gets everything over SSH, and the dry run says why
    p = make_plan(host(), IMAGE, dataclasses.replace(facts(), origin_reachable=False), NONE, frozenset(), SIZES,
                  "tarball", origin=ORIGIN)
    assert (p.missing, p.from_origin, p.origin) == ((0, 1, 2, 3), (), None) and "cannot reach nvcr.io" in p.reason


def test_on_the_containerd_store_the_load_names_the_pulled_layers_by_the_registrys_blobs() -> None:
    f = dataclasses.replace(facts(version="28.5.2", store="containerd"), origin_reachable=True)
    p = make_plan(host(), IMAGE, f, NONE, frozenset(), SIZES, "tarball", origin=ORIGIN)
    assert p.missing == (2, 3) and p.from_origin == (0, 1)
    assert p.reused == ((D[0], BLOBS[0]), (D[1], BLOBS[1]))


def test_the_registry_route_does_not_change() -> None:
    p = make_plan(host(deploy_registry="r:5000"), IMAGE, dataclasses.replace(facts(reachable=True), origin_reachable=True),
                  NONE, frozenset(chain_ids(D)[:1]), SIZES, "auto", origin=ORIGIN)
    assert p.route == "registry" and p.from_origin == () and p.origin is None


def _fake_docker(tmp_path: Path, pull: str, layers: str) -> Path:
    docker = tmp_path / "docker"
    docker.write_text("#!/bin/sh\n"
                      f'case "$1" in\n  pull) {pull};;\n  image) echo \'{layers}\';;\nesac\n')
    docker.chmod(0o755)
    return docker


@pytest.mark.parametrize(("pull", "layers", "code", "parsed"), [
    ('echo "v1: Pulling from nvidia/pytorch"; echo "Digest: sha256:aa"', '["sha256:11","sha256:22"]', 0,
     ("sha256:11", "sha256:22")),
    ('echo "v1: Pulling from nvidia/pytorch"', "[]", 0, ()),  # incomplete (moby#49784)
    ('echo "manifest unknown" >&2; exit 1', "[]", 1, None),
    ("sleep 30", "[]", 9, None),  # says nothing: given up after the start limit
])
def test_the_pull_script(tmp_path: Path, pull: str, layers: str, code: int, parsed: tuple[str, ...] | None) -> None:
    docker = _fake_docker(tmp_path, pull, layers)
    argv = cmd.origin_pull_argv((str(docker),), BASE_REF, start_s=1)
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
    assert res.returncode == code, res.stderr
    assert cmd.parse_origin_pull(res.stdout) == parsed
    if code == 9:
        assert "no answer from the registry within 1s" in res.stderr


def _pulling(stdout: str, exited: int = 0) -> tuple[OriginPull, list[str], FakeSession]:
    fake = FakeSession("gpu01", strict=False)
    fake.on(["sh", "-c", cmd.origin_pull_argv(("docker",), BASE_REF)[2]], prefix=True, stdout=stdout, exited=exited,
            stderr="" if exited == 0 else "Error response from daemon: manifest unknown")
    h = host()
    p = make_plan(h, IMAGE, dataclasses.replace(facts(), origin_reachable=True), NONE, frozenset(), SIZES,
                  "tarball", origin=ORIGIN)
    started: list[str] = []
    leg = Leg(h, HostConn(h, session=fake), IMAGE, p, Counter())
    return OriginPull(leg, lambda: started.append("loader")).start(), started, fake


def test_a_pulled_base_lets_the_loads_begin() -> None:
    puller, started, _ = _pulling(f'v1: Pulling\n@@layers ["{D[0]}","{D[1]}"]\n')
    puller.wait()
    assert started == ["loader"]


@pytest.mark.parametrize(("stdout", "exited", "why"), [
    ("", 1, "manifest unknown"),
    ("@@layers []\n", 0, "incomplete"),
    (f'@@layers ["{D[1]}","{D[0]}"]\n', 0, "not the image's base"),
])
def test_a_failed_pull_is_an_origin_error_and_the_loads_never_begin(stdout: str, exited: int, why: str) -> None:
    puller, started, fake = _pulling(stdout, exited)
    with pytest.raises(OriginPullFailed, match=why) as raised:
        puller.wait()
    assert started == [] and raised.value.ref == BASE_REF and "sends the base layers instead" in str(raised.value)
    if why == "incomplete":  # not left behind to confuse the next pull
        assert cmd.remove_image_argv(("docker",), BASE_REF) in fake.argvs()
