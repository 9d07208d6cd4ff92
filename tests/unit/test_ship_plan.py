"""The pure ship planner: routes, missing layers, codecs, byte bounds, preflight, dry-run rendering."""
from __future__ import annotations

import pytest

from deployer.chain import chain_ids
from deployer.codec import CodecChoice
from deployer.commands import load as ld
from deployer.commands import ship as cmd
from deployer.commands.facts import DockerFacts, HostFacts
from deployer.commands.layers import missing_layers, parse_listing
from deployer.commands.ship import ImageState
from deployer.errors import PreflightError, SpecError
from deployer.inventory.host import Host
from deployer.local.image import ImageInfo
from deployer.refs import normalize, registry_ref, split_ref
from deployer.ship import steps
from deployer.ship.plan import (
    MARGIN,
    ShipPlan,
    layer_bytes_bound,
    make_plan,
    needs_layer_sizes,
    pick_codec,
    preflight,
    pulled_ids,
)
from deployer.ship.render import plan_commands, plan_json, render
from deployer.tarfmt import Descriptor, uncompressed_layer

D = tuple(f"sha256:{str(i) * 64}" for i in range(1, 5))
IMAGE = ImageInfo("trainer:v3", "sha256:" + "f" * 64, D, 400, "linux", "amd64", ("trainer:v3",))
SIZES = [100, 0, 100, 100, 100]  # history, oldest first; one entry made no layer
STAGING = "/stage"


def host(name: str = "gpu01", **vars: object) -> Host:
    return Host(name, {"deploy_staging_dir": STAGING, **vars})


def facts(version: str = "20.10.24", store: str = "overlay2", reachable: bool | None = None,
          decompressors: frozenset[str] = frozenset({"zstd", "gzip"}), disk: int | None = 10**12,
          docker_disk: int | None = 10**12, arch: str = "x86_64") -> HostFacts:
    docker = DockerFacts(version, "1.41", "overlay2", store, "/var/lib/docker", False)
    return HostFacts(docker, disk_free_bytes=disk, docker_disk_free_bytes=docker_disk,
                     registry_reachable=reachable, decompressors=decompressors, arch=arch)


NONE = ImageState(None)
BASE_PRESENT = frozenset(chain_ids(D)[:2])  # host has the bottom two layers


def plan(h: Host | None = None, f: HostFacts | None = None, state: ImageState = NONE,
         present: frozenset[str] = BASE_PRESENT, via: str = "auto", pulls_incomplete: bool = False) -> ShipPlan:
    return make_plan(h or host(), IMAGE, f or facts(), state, present, SIZES, via, pulls_incomplete=pulls_incomplete)


PUSHED = "sha256:" + "9" * 64  # the manifest the image was pushed as
PULLED = ImageInfo("trainer:v3", "sha256:" + "f" * 64, D, 400, "linux", "amd64", ("trainer:v3",),
                   repo_digests=(f"reg:5000/trainer@{PUSHED}",))


def test_registry_ids_are_the_pushed_manifests_and_a_containerd_id() -> None:
    assert IMAGE.registry_ids == frozenset()
    assert PULLED.registry_ids == {PUSHED}
    # on a containerd workstation the image's own id is its manifest's (or index's) digest
    on_containerd = ImageInfo("t:1", PUSHED, D, 1, "linux", "amd64", (), config_digest="sha256:" + "f" * 64)
    assert on_containerd.registry_ids == {PUSHED}


def test_a_pulled_image_is_there_when_it_holds_every_layer() -> None:
    layers = '["' + '","'.join(D) + '"]'
    inspected = parse_listing(f"{PUSHED} {layers}\n")
    assert pulled_ids(PULLED, inspected, {}) == {PUSHED}
    # known from an earlier listing (or the registry ship that pulled it): its layers remembered
    known = parse_listing(f"known {PUSHED}\nlisting skipped\n")
    assert pulled_ids(PULLED, known, {PUSHED: list(D)}) == {PUSHED}
    assert pulled_ids(PULLED, known, {}) == frozenset()  # its layers not known: not recognised
    # a pull that skipped the layers a load had unpacked (moby#49784) lists fewer: not the image
    short = '["' + '","'.join(D[:2]) + '"]'
    assert pulled_ids(PULLED, parse_listing(f"{PUSHED} {short}\n"), {}) == frozenset()
    # another image with the same layers (another config), or an image never pushed: not this one
    other = "sha256:" + "8" * 64
    assert pulled_ids(PULLED, parse_listing(f"{other} {layers}\n"), {}) == frozenset()
    assert pulled_ids(IMAGE, inspected, {}) == frozenset()


def test_a_pulled_image_makes_a_reship_a_noop_or_a_tag() -> None:
    f = facts("28.5.2", store="containerd", reachable=True)
    h = host(deploy_registry="reg:5000")
    p = plan(h, f, ImageState(PUSHED, frozenset({PUSHED})), via="registry")
    assert (p.route, p.host_id, p.transfers) == ("noop", PUSHED, False)
    p = plan(h, f, ImageState(None, frozenset({PUSHED})), via="registry")
    assert (p.route, p.host_id) == ("tag", PUSHED)


def test_noop_and_tag_only() -> None:
    p = plan(state=ImageState(IMAGE.id, frozenset({IMAGE.id})))
    assert (p.route, p.via, p.transfers) == ("noop", None, False)
    p = plan(state=ImageState("sha256:other", frozenset({IMAGE.id})))
    assert (p.route, p.reason) == ("tag", "host has the image id; tag only")


def test_tarball_sends_only_missing_layers_with_the_best_codec() -> None:
    p = plan(via="tarball")
    assert (p.route, p.via, p.missing) == ("tarball", "tarball", (2, 3))
    assert p.codec == CodecChoice("zstd", host_decompress=True)  # 20.10 + zstd binary
    assert p.raw_bytes == 200
    assert p.staging_need == 200 + MARGIN  # compressed blobs (<= raw); they decompress straight into docker load
    assert p.docker_need == 400 + MARGIN
    assert plan(f=facts(version="24.0.7"), via="tarball").codec == CodecChoice("zstd", False)
    assert plan(f=facts(decompressors=frozenset()), via="tarball").codec == CodecChoice("gzip", False)
    assert plan(present=frozenset(), via="tarball").missing == (0, 1, 2, 3)


def test_forced_codec() -> None:
    assert pick_codec("h", "20.10.24", frozenset({"zstd"}), "gzip") == CodecChoice("gzip", False)
    assert pick_codec("h", "20.10.24", frozenset({"zstd"}), "zstd") == CodecChoice("zstd", True)
    assert pick_codec("h", "24.0.7", frozenset(), "zstd") == CodecChoice("zstd", False)
    with pytest.raises(PreflightError, match="cannot load zstd layers"):
        pick_codec("h", "20.10.24", frozenset({"gzip"}), "zstd")
    p = make_plan(host(), IMAGE, facts(), NONE, BASE_PRESENT, SIZES, "tarball", "gzip")
    assert p.codec == CodecChoice("gzip", False) and p.staging_need == 200 + MARGIN


def test_containerd_store_gets_only_the_missing_layers_as_an_oci_load() -> None:
    sizes = {d: 1000 + i for i, d in enumerate(IMAGE.diff_ids)}
    recorded = Descriptor("application/vnd.oci.image.layer.v1.tar+zstd", "sha256:" + "9" * 64, 321)
    p = make_plan(host(), IMAGE, facts(store="containerd"), NONE, BASE_PRESENT, SIZES, "tarball",
                  known_sizes=sizes, host_content={IMAGE.diff_ids[0]: recorded})
    assert (p.missing, p.load_format, p.image_store) == ((2, 3), "oci", "containerd")
    # the blobs go in as they are: Docker on this store reads zstd (no zstd binary needed on the host)
    assert p.codec == CodecChoice("zstd", host_decompress=False)
    # a layer deployer loaded is named by the blob it recorded; one it did not, by its tar (a plain load)
    assert p.reused == ((IMAGE.diff_ids[0], recorded), (IMAGE.diff_ids[1], uncompressed_layer(IMAGE.diff_ids[1], 1001)))
    p = make_plan(host(), IMAGE, facts(store="containerd", decompressors=frozenset()), NONE, BASE_PRESENT,
                  SIZES, "tarball", "gzip", known_sizes=sizes)
    assert p.codec == CodecChoice("gzip", host_decompress=False)


def test_containerd_store_resends_layers_no_blob_of_which_is_known() -> None:
    sizes = {IMAGE.diff_ids[1]: 1001}
    p = make_plan(host(), IMAGE, facts(store="containerd"), NONE, BASE_PRESENT, SIZES, "tarball",
                  known_sizes=sizes)
    assert p.missing == (0, 2, 3) and p.reused == ((IMAGE.diff_ids[1], uncompressed_layer(IMAGE.diff_ids[1], 1001)),)
    assert "1 layer(s) the host has are sent again" in p.reason


def test_auto_route() -> None:
    reg = host(deploy_registry="10.0.0.5:5000")
    p = plan(reg, facts(reachable=True))
    assert (p.route, p.registry_ref) == ("registry", "10.0.0.5:5000/trainer:v3")
    assert p.reason == "auto: host reaches 10.0.0.5:5000"
    assert plan(reg, facts(reachable=False)).route == "tarball"
    assert plan(reg, facts(reachable=None)).reason == "auto: host could not confirm it reaches 10.0.0.5:5000"
    assert plan(host(), facts(reachable=True)).reason == "auto: no deploy_registry"


def test_auto_sends_the_layers_where_the_last_pull_came_out_incomplete() -> None:
    """Docker 28's containerd store pulls an image incomplete when it has a layer unpacked from a
    load (moby#49784): auto then sends the layers at once instead of pulling first; a forced
    registry route still pulls (and falls back)."""
    reg = host(deploy_registry="10.0.0.5:5000")
    p = plan(reg, facts("28.5.2", reachable=True), pulls_incomplete=True)
    assert p.route == "tarball" and p.missing == (2, 3)
    assert p.reason.startswith("auto: the host's last pull from 10.0.0.5:5000 left an incomplete image (moby#49784")
    forced = plan(reg, facts("28.5.2", reachable=True), via="registry", pulls_incomplete=True)
    assert forced.route == "registry"


def test_forced_registry_needs_a_reachable_registry() -> None:
    with pytest.raises(PreflightError, match="no deploy_registry"):
        plan(via="registry")
    with pytest.raises(PreflightError, match="cannot reach"):
        plan(host(deploy_registry="r:5000"), facts(reachable=False), via="registry")
    assert plan(host(deploy_registry="r:5000"), facts(reachable=None), via="registry").route == "registry"
    with pytest.raises(SpecError):
        plan(via="carrier-pigeon")


def test_layer_bytes_bound() -> None:
    assert layer_bytes_bound([10, 0, 20, 30], 3, 2) == 50
    assert layer_bytes_bound([10, 0, 20, 30], 3, 0) == 0
    # a zero-byte layer makes the mapping ambiguous: the bound stays an upper bound
    assert layer_bytes_bound([10, 0, 30], 3, 2) == 40
    assert layer_bytes_bound([], 3, 2) == 0


def test_preflight_disk_and_docker() -> None:
    preflight(plan(via="tarball"), facts())
    with pytest.raises(PreflightError, match="not enough disk at the staging dir"):
        preflight(plan(via="tarball"), facts(disk=1000))
    with pytest.raises(PreflightError, match="Docker's root dir"):
        preflight(plan(via="tarball"), facts(docker_disk=1000))
    preflight(plan(via="tarball"), facts(disk=None))  # unknown: not refused
    no_docker = HostFacts(None, docker_error="docker: command not found")
    with pytest.raises(PreflightError, match="command not found"):
        preflight(plan(state=ImageState(IMAGE.id, frozenset({IMAGE.id}))), no_docker)
    with pytest.raises(PreflightError, match="built for amd64, the host is arm64"):
        preflight(plan(via="tarball"), facts(arch="aarch64"), "amd64")
    # nothing to send: no disk needed
    preflight(plan(state=ImageState("sha256:o", frozenset({IMAGE.id}))), facts(disk=0, docker_disk=0))


def test_refs() -> None:
    assert split_ref("trainer") == ("trainer", "latest")
    assert split_ref("localhost:5000/a/b:v1") == ("localhost:5000/a/b", "v1")
    assert normalize("a/b") == "a/b:latest"
    assert registry_ref("r:5000", "ghcr.io/team/trainer:v3") == "r:5000/team/trainer:v3"
    assert registry_ref("r:5000/", "team/trainer") == "r:5000/team/trainer:latest"
    for bad in ("a@sha256:00", "sha256:abc", " x"):
        with pytest.raises(SpecError):
            split_ref(bad)


def test_render_tarball_commands() -> None:
    h = host()
    p = plan(h, via="tarball")
    argvs = plan_commands(p, h)
    blob3 = "/stage/blobs/sha256/<zstd blob of layer 3>.zst"
    assert argvs[0] == cmd.prepare_argv("/stage")  # one listing instead of a stat per blob
    # each blob is appended from the host's offset and hashed as it lands
    receive = cmd.receive_argv(blob3 + ".partial", blob3, "sha256:<zstd blob of layer 3>", "<blob bytes>",
                               "<bytes the host holds>")
    assert argvs[1] == receive  # sizes and digests are known once compressed, the offset once listed
    receives = [a for a in argvs if a[:3] == cmd.receive_argv("x", "y", "z", 0)[:3]]
    assert len(receives) == 2
    # layers register as they land (stdin: the tar head), the host decompresses zstd
    head = f"/stage/load-{'f' * 16}.head"
    assert argvs[3][:15] == ld.load_argv(("docker",), head, "zstd", 0, [], "/stage")[:11] + (
        "<tar head blocks>", "1", blob3, "<tar padding>")
    install = argvs[-1]
    assert install[4:8] == (head, IMAGE.id, "trainer:v3", "/stage/standins")
    assert install[9] == "<zstd blob of layer 3>.zst <zstd blob of layer 4>.zst"  # cleaned after the load
    assert install[-1] == "docker"
    lines = render(p, h)
    assert lines[0].startswith("gpu01: tarball: via tarball; 2/4 layers to send, zstd (decompressed on the host)")
    assert all(line.startswith("  $ ") for line in lines[1:])
    js = plan_json(p, h)
    assert js["layers_missing"] == [3, 4] and js["codec"] == "zstd" and len(js["commands"]) == len(argvs)


def test_render_registry_and_noop() -> None:
    h = host(deploy_registry="r:5000")
    p = plan(h, facts(reachable=True))
    # pull, check the id (a classic store: by the pushed manifest's digest the pull reports), tag: one round trip
    assert plan_commands(p, h) == [
        cmd.pull_install_argv(("docker",), "r:5000/trainer:v3", "trainer:v3", [steps.EXPECTED_IDS],
                              pushed=steps.PUSHED, preview=True),
    ]
    # the containerd store: the id by the pushed manifest's digest too, and that the image is
    # complete (moby#49784) beside the tag, which goes back to what REF named if it is not; the
    # pushed manifest's blobs (known once pushed) go to the staging dir's content records
    p = plan(h, facts("28.5.2", store="containerd", reachable=True))
    assert plan_commands(p, h) == [
        cmd.pull_install_argv(("docker",), "r:5000/trainer:v3", "trainer:v3", [steps.EXPECTED_IDS],
                              pushed=steps.PUSHED, whole=False, content=f"{STAGING}/content",
                              records=steps.PUSHED_BLOBS, records_from=steps.PUSHED, preview=True),
    ]
    before = ImageState("sha256:" + "0" * 64, frozenset())
    p = plan(h, facts("28.5.2", store="containerd", reachable=True), state=before)
    assert p.ref_was == "sha256:" + "0" * 64 and plan_commands(p, h)[0][-6] == p.ref_was  # previous, content, records, from, drop, docker
    assert plan_commands(plan(state=ImageState(IMAGE.id, frozenset({IMAGE.id}))), h) == []


def test_layer_sizes_are_read_only_for_a_load_or_to_find_the_image_there() -> None:
    blob = Descriptor("application/vnd.oci.image.layer.v1.tar+zstd", "sha256:" + "a" * 64, 10)
    recorded = {d: blob for d in D}
    top_two = missing_layers(D, BASE_PRESENT)
    assert top_two == (2, 3)
    for via in ("auto", "tarball", "registry"):
        assert needs_layer_sizes(D, recorded, top_two, via) is False  # every layer has its blob
        assert needs_layer_sizes(D, {}, top_two, via) is (via != "registry")
    # a registry ship of an image whose every layer the host has: its load's manifest may be there
    assert needs_layer_sizes(D, {}, missing_layers(D, frozenset(chain_ids(D))), "registry") is True
    assert needs_layer_sizes(D, {D[0]: blob}, missing_layers(D, frozenset()), "registry") is False
