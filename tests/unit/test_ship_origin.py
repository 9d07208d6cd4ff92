"""Origin pull (issue 19), the pure and local parts: finding the base, planning which layers a host
pulls from the base's registry, the remote pull script, and the pull's outcome as the sender sees it.
The whole ship against a real registry is in tests/integration/test_origin.py."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest
from loopback import serving
from test_ship_plan import IMAGE, NONE, SIZES, D, facts, host

from deployer import layercache
from deployer.chain import chain_ids
from deployer.commands import ship as cmd
from deployer.local import declared
from deployer.local.fake import FakeClient
from deployer.local.image import ImageInfo, PulledBase, pick_base, pulled_base
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


def test_pulled_base_inspects_only_images_the_size_of_a_run_of_bottom_layers() -> None:
    """On the classic store an image's size is its layers': every image pushed anywhere has a repo
    digest, and only those whose size is that of a run of the image's bottom layers are inspected."""
    fake = FakeClient()
    fake.add_image("trainer:v3", IMAGE.id, diff_ids=D, size=60)
    fake.add_image("nvcr.io/nvidia/pytorch:24.01", "sha256:" + "7" * 64, diff_ids=D[:2], size=30,
                   repo_digests=[BASE_REF])
    for n in range(5):  # the user's own images, pushed: repo digests, other sizes, or the whole image's
        fake.add_image(f"reg:5000/app:v{n}", f"sha256:{n}" + "6" * 63, diff_ids=D, size=60 + n,
                       repo_digests=[f"reg:5000/app@sha256:{n}" + "6" * 63])
    assert len(D) == 4
    base = pulled_base(IMAGE, fake, [10, 20, 15, 15])  # type: ignore[arg-type]
    assert base is not None and base.repo_digest == BASE_REF
    assert [c[1] for c in fake.calls if c[0] == "inspect_image"] == ["sha256:" + "7" * 64]
    assert pulled_base(IMAGE, fake, [10, 25, 10, 15]) is None  # type: ignore[arg-type]  # no run of 30 bytes
    # a layer of size 0 may be the top one: then an image of the whole size may be the base
    fake.calls.clear()
    pulled_base(IMAGE, fake, [10, 20, 0, 30])  # type: ignore[arg-type]
    assert sorted(c[1] for c in fake.calls if c[0] == "inspect_image") == ["sha256:0" + "6" * 63, "sha256:" + "7" * 64]


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


def test_a_base_a_containerd_workstation_lists_is_pulled_only_once_its_registry_shows_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On the containerd image store every local image has a repo digest, built or imported here
    too: such a base is no origin until its registry's manifest is read (with_blobs)."""
    containerd = FakeClient(info_json={"Driver": "overlayfs",
                                       "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]})
    listed = PulledBase(BASE_REF, 2, ORIGIN.config_digest, "sha256:" + "7" * 64)
    monkeypatch.setattr(origin, "_pulled_base", lambda *_: listed)
    found = origin.find_origin(IMAGE, containerd)  # type: ignore[arg-type]
    assert found is not None and found.ref == BASE_REF and not found.confirmed
    classic = origin.find_origin(IMAGE, FakeClient())  # type: ignore[arg-type]
    assert classic is not None and classic.confirmed  # the classic store gives a repo digest on a pull or a push only
    bare = dataclasses.replace(ORIGIN, blobs=(), confirmed=False)
    for store in ("overlay2", "containerd"):
        assert pulled_from_origin(bare, (0, 1, 2), store, True) == (
            (), "nvcr.io did not show that it holds " + BASE_REF + ", so the base is sent")

    def unreadable(*_: object) -> dict:
        raise origin.RegistryAPIError("manifest unknown")

    monkeypatch.setattr(origin, "image_manifest", unreadable)
    assert origin.with_blobs(bare, containerd) == bare  # a base built here: it stays unconfirmed, and is sent
    layers = [{"mediaType": d.media_type, "digest": d.digest, "size": d.size} for d in BLOBS]
    monkeypatch.setattr(origin, "image_manifest", lambda *_: {"layers": layers})
    read = origin.with_blobs(bare, containerd)
    assert read == ORIGIN and read.confirmed
    assert pulled_from_origin(read, (0, 1, 2), "overlay2", True) == ((0, 1), "")


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


def _remembering(fake: FakeClient) -> PulledBase | None:
    """pulled_base as find_origin calls it: with the local images the layer cache knows."""
    return pulled_base(IMAGE, fake, None, layercache.local_layers(), layercache.remember_local)  # type: ignore[arg-type]


def test_pulled_base_inspects_an_image_once_then_knows_its_layers_by_id(tmp_path: Path) -> None:
    """An image id names its layers: a later ship inspects only new images and the one it picks."""
    fake = FakeClient()
    fake.add_image("trainer:v3", IMAGE.id, diff_ids=D)
    fake.add_image("nvcr.io/nvidia/pytorch:24.01", "sha256:" + "7" * 64, diff_ids=D[:2], repo_digests=[BASE_REF])
    for n in range(5):  # the user's own images, pushed
        fake.add_image(f"reg:5000/app:v{n}", f"sha256:{n}" + "6" * 63, diff_ids=(*D[:3], f"sha256:{n}" + "8" * 63),
                       repo_digests=[f"reg:5000/app@sha256:{n}" + "6" * 63])
    first = _remembering(fake)
    assert first is not None and first.repo_digest == BASE_REF
    assert len([c for c in fake.calls if c[0] == "inspect_image"]) == 6
    assert layercache.local_layers()["sha256:" + "7" * 64] == tuple(D[:2])
    fake.calls.clear()
    fake.add_image("nvcr.io/nvidia/pytorch:23.12", "sha256:" + "5" * 64, diff_ids=D[:1],
                   repo_digests=["nvcr.io/nvidia/pytorch@sha256:" + "4" * 64])
    again = _remembering(fake)
    assert again == first
    # the new image (a shorter base: not picked), and the picked one read afresh
    assert sorted(c[1] for c in fake.calls if c[0] == "inspect_image") == ["sha256:" + "5" * 64, "sha256:" + "7" * 64]
    # an image removed since is no candidate, though its layers are still known: the next best is
    fake.api.known = {k: v for k, v in fake.api.known.items() if v["Id"] != "sha256:" + "7" * 64}
    shorter = _remembering(fake)
    assert shorter is not None and (shorter.repo_digest, shorter.layers) == ("nvcr.io/nvidia/pytorch@sha256:" + "4" * 64, 1)


def test_a_re_ship_after_a_code_change_reads_the_base_found_before_instead_of_listing_every_image() -> None:
    fake = FakeClient()
    base_id = "sha256:" + "7" * 64
    fake.add_image("trainer:v3", IMAGE.id, diff_ids=D)
    fake.add_image("nvcr.io/nvidia/pytorch:24.01", base_id, diff_ids=D[:2], repo_digests=[BASE_REF])
    first = origin.find_origin(IMAGE, fake)  # type: ignore[arg-type]
    assert first is not None and first.ref == BASE_REF and ("images",) in fake.calls

    def build(top: str, below: tuple[str, ...] = D[:-1]) -> ImageInfo:
        image = dataclasses.replace(IMAGE, id=f"sha256:{top * 64}", diff_ids=(*below, f"sha256:{top * 64}"))
        fake.add_image(f"trainer:{top}", image.id, diff_ids=image.diff_ids)
        fake.calls.clear()
        return image

    code_change = build("a")  # only the top layer is new: the base found for the layers below is read afresh
    assert origin.find_origin(code_change, fake) == first  # type: ignore[arg-type]
    assert fake.calls == [("inspect_image", base_id)]
    new_deps = build("b", (*D[:2], "sha256:" + "e" * 64))  # other layers below the top: every image looked at
    assert origin.find_origin(new_deps, fake) == first and ("images",) in fake.calls  # type: ignore[arg-type]
    fake.api.known = {k: v for k, v in fake.api.known.items() if v["Id"] != base_id}  # the base removed since
    gone = build("c")
    assert origin.find_origin(gone, fake) is None and ("images",) in fake.calls  # type: ignore[arg-type]
    one_layer = build("d", ())  # no layer below its top: no base to look for
    assert origin.find_origin(one_layer, fake) is None and fake.calls == []  # type: ignore[arg-type]


def test_a_base_found_is_recalled_for_a_while_by_the_layers_below_the_top(tmp_path: Path) -> None:
    path = tmp_path / "layers.json"
    assert layercache.recalled_base(D[:3], 3600, path) is None
    layercache.remember_base(D[:3], "sha256:b", path, now=1000.0)
    assert layercache.recalled_base(D[:3], 3600, path, now=1000.0 + 3600) == "sha256:b"
    assert layercache.recalled_base(D[:3], 3600, path, now=1000.0 + 3601) is None  # too old: looked up again
    assert layercache.recalled_base(D[:2], 3600, path, now=1001.0) is None  # other layers
    for n in range(layercache.MAX_BASES):
        layercache.remember_base((f"sha256:{n}",), "sha256:x", path, now=1002.0)
    assert layercache.recalled_base(D[:3], 3600, path, now=1003.0) is None  # bounded: the oldest went
    path.write_text(json.dumps({"bases": ["not", "a", "dict"]}))
    assert layercache.recalled_base(D[:3], 3600, path) is None


def test_local_layers_keep_listed_ids_beside_the_hosts_and_survive_corruption(tmp_path: Path) -> None:
    path = tmp_path / "layers.json"
    assert layercache.local_layers(path) == {}
    path.write_text("{not json")
    assert layercache.local_layers(path) == {}
    path.write_text(json.dumps({"root@10.0.0.1:22": {"sha256:h": ["d0"]}}))
    layercache.remember_local({"sha256:a": ["d1", "d2"], "sha256:b": []}, {"sha256:a"}, path)
    assert layercache.local_layers(path) == {"sha256:a": ("d1", "d2")}  # no layers: never remembered
    layercache.remember_local({"sha256:c": ["d3"]}, {"sha256:c"}, path)  # a is no longer listed
    assert layercache.local_layers(path) == {"sha256:c": ("d3",)}
    assert json.loads(path.read_text())["root@10.0.0.1:22"] == {"sha256:h": ["d0"]}  # the hosts' are kept


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


# --- a base the build declared (deployer.local.declared), looked up in its registry -----------------

def _blob(obj: dict) -> tuple[str, bytes]:
    data = json.dumps(obj).encode()
    return f"sha256:{hashlib.sha256(data).hexdigest()}", data


class _Registry(BaseHTTPRequestHandler):
    """A registry holding team/base as an index of two platforms (amd64's layers are D[:2])."""

    blobs: ClassVar[dict[str, bytes]] = {}
    requests: ClassVar[list[str]] = []

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        body = self.blobs.get(self.path.rsplit("/", 1)[-1])
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")


@dataclasses.dataclass
class _Declared:
    name: str  # the base as a Dockerfile names it: 127.0.0.1:PORT/team/base
    index: str
    amd64: str  # the amd64 manifest's digest: what the base is pinned by
    config: str
    handler: type[_Registry]
    path: Path  # the record of builds (bases.json)
    client: FakeClient

    def record(self, digest: str = "", tag: str = "1") -> None:
        material = declared.Material(self.name, tag, digest or self.index, "linux/amd64")
        declared.record(IMAGE.config_digest, [material], self.path)


@pytest.fixture
def registry_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Declared]:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))  # no login
    config, config_data = _blob({"rootfs": {"type": "layers", "diff_ids": list(D[:2])}})
    arm_config, arm_data = _blob({"rootfs": {"type": "layers", "diff_ids": ["sha256:" + "e" * 64]}})
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "b" * 64, "size": 1}
    amd64, amd64_data = _blob({"schemaVersion": 2, "config": {"digest": config}, "layers": [layer, layer]})
    arm64, arm64_data = _blob({"schemaVersion": 2, "config": {"digest": arm_config}, "layers": [layer]})
    index, index_data = _blob({"schemaVersion": 2, "manifests": [
        {"digest": arm64, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": amd64, "platform": {"os": "linux", "architecture": "amd64"}}]})
    handler = type("Handler", (_Registry,), {"requests": [], "blobs": {
        index: index_data, amd64: amd64_data, arm64: arm64_data, config: config_data, arm_config: arm_data}})
    fake = FakeClient(info_json={"Driver": "overlay2", "RegistryConfig": {"InsecureRegistryCIDRs": ["127.0.0.0/8"]}})
    fake.add_image("trainer:v3", IMAGE.id, diff_ids=D)
    with serving(handler) as address:
        yield _Declared(f"{address}/team/base", index, amd64, config, handler, tmp_path / "bases.json", fake)


def test_a_declared_base_is_pinned_by_its_platforms_manifest_and_looked_up_once(registry_base: _Declared) -> None:
    b = registry_base
    b.record()
    found = origin.declared_origin(IMAGE, b.client, b.path)  # type: ignore[arg-type]
    assert found == Origin(f"{b.name}@{b.amd64}", b.name.split("/")[0], 2, b.config)
    assert found is not None and "@sha256:" in found.ref and found.ref != f"{b.name}@{b.index}"  # never the tag
    asked = len(b.handler.requests)
    assert asked == 3  # the index, amd64's manifest, its config
    assert origin.declared_origin(IMAGE, b.client, b.path) == found  # remembered: a re-ship asks nothing
    assert len(b.handler.requests) == asked
    # the material already names the platform's manifest (a single-platform base)
    b.record(digest=b.amd64)
    assert origin.declared_origin(IMAGE, b.client, b.path) == found


def test_a_declared_image_that_is_not_the_base_is_remembered_as_such(registry_base: _Declared) -> None:
    b = registry_base
    other = dataclasses.replace(IMAGE, diff_ids=("sha256:" + "e" * 64, *D[2:]))  # built on something else
    declared.record(other.config_digest, [declared.Material(b.name, "1", b.index, "linux/amd64")], b.path)
    assert origin.declared_origin(other, b.client, b.path) is None  # type: ignore[arg-type]
    asked = len(b.handler.requests)
    assert origin.declared_origin(other, b.client, b.path) is None  # type: ignore[arg-type]
    assert len(b.handler.requests) == asked
    assert declared.lookup(other.config_digest, b.path).checked  # type: ignore[union-attr]


def test_a_registry_that_does_not_answer_is_asked_again_only_later(registry_base: _Declared) -> None:
    b = registry_base
    b.record(digest="sha256:" + "0" * 64)  # the registry no longer has it
    assert origin.declared_origin(IMAGE, b.client, b.path) is None  # type: ignore[arg-type]
    asked = len(b.handler.requests)
    assert origin.declared_origin(IMAGE, b.client, b.path) is None  # type: ignore[arg-type]
    assert len(b.handler.requests) == asked
    entry = declared.lookup(IMAGE.config_digest, b.path)
    assert entry is not None and not entry.checked and entry.tried_at > 0


def test_a_declared_base_built_here_is_not_looked_up(registry_base: _Declared) -> None:
    """FROM an image built or imported locally (no repo digest): no registry has it."""
    b = registry_base
    b.client.add_image(f"{b.name}:1", "sha256:" + "6" * 64, diff_ids=D[:2])
    b.record()
    assert origin.declared_origin(IMAGE, b.client, b.path) is None  # type: ignore[arg-type]
    assert b.handler.requests == []


def test_a_pulled_base_comes_first_and_a_plain_build_has_no_declared_one(
        registry_base: _Declared, monkeypatch: pytest.MonkeyPatch) -> None:
    b = registry_base
    monkeypatch.setattr(declared, "store_path", lambda: b.path)
    assert origin.find_origin(IMAGE, b.client) is None  # type: ignore[arg-type]  # nothing recorded
    b.record()
    b.client.add_image("nvcr.io/nvidia/pytorch:24.01", "sha256:" + "7" * 64, diff_ids=D[:2], repo_digests=[BASE_REF])
    found = origin.find_origin(IMAGE, b.client)  # type: ignore[arg-type]
    assert found is not None and found.ref == BASE_REF and b.handler.requests == []


def test_a_registry_that_cannot_be_reached_is_tried_once_per_ship(registry_base: _Declared,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    b = registry_base
    dead = "127.0.0.1:9/team"  # nothing listens there
    declared.record(IMAGE.config_digest, [declared.Material(f"{dead}/{n}", "1", b.index, "linux/amd64")
                                          for n in ("golang", "base")] +
                    [declared.Material(b.name, "1", b.index, "linux/amd64")], b.path)
    described: list[str] = []
    real = origin._describe

    def describe(material: declared.Material, *args: object) -> declared.DeclaredBase:
        described.append(material.name)
        return real(material, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(origin, "_describe", describe)
    found = origin.declared_origin(IMAGE, b.client, b.path)  # type: ignore[arg-type]
    assert found is not None and found.ref == f"{b.name}@{b.amd64}"  # the registry that answers still counts
    assert described == [f"{dead}/golang", b.name]
    entry = declared.lookup(IMAGE.config_digest, b.path)
    assert entry is not None and not entry.checked and entry.base is not None


def test_a_record_that_cannot_be_used_never_fails_the_ship(registry_base: _Declared,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    b = registry_base
    bad = declared.Material("https://reg.example/base", "1", b.index, "linux/amd64")  # not a repository name
    declared.record(IMAGE.config_digest, [bad], b.path)
    assert origin.declared_origin(IMAGE, b.client, b.path) is None  # type: ignore[arg-type]
    b.record()
    monkeypatch.setattr(declared, "store_path", lambda: b.path)

    def unwritable(*_: object) -> None:
        raise PermissionError("read-only cache")

    monkeypatch.setattr(declared, "settle", unwritable)
    assert origin.find_origin(IMAGE, b.client) is None  # type: ignore[arg-type]
