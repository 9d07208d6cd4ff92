"""Registry route accounting: push events -> pushed layers -> compressed bytes from the manifest;
and the manifest reader's registry auth, against a loopback HTTP server."""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import docker.errors
import pytest
from loopback import serving

from deployer.errors import LocalError
from deployer.local.fake import FakeClient
from deployer.local.image import ImageInfo
from deployer.ship.registry import (
    STAGE_TAG,
    Pusher,
    PushStats,
    StageFeed,
    read_push_stream,
    uploaded_bytes,
    with_stages,
)
from deployer.ship.registry_api import (
    ManifestReader,
    RegistryAPIError,
    Repo,
    image_manifest,
    is_insecure,
    parse_challenge,
    split_repo,
)
from deployer.tarfmt import Descriptor

# The diff ids of an image FROM deployer-testbed/sample plus one `RUN seq` layer, and the stream
# docker 20.10 gave when pushing it to a new repo of a registry that had the sample's blobs.
DIFF_IDS = ("sha256:df4199fbf21edca34313bda5f932610343973cc2f3e80c3fcc289af655649f74",
            "sha256:bfb5e82cd2f1d4668acc8114343fcb34403e9540a445aab3b553e5d7704567a0",
            "sha256:96ec6d362beecf1b8ab11feeadcf1fa7442a1319d16c8bca4fb97b3ec8db03fe",
            "sha256:32faf85f81fa7552470e6e1ef13fa9fe7506586d2ec96f0669895b4ff9c75061",
            "sha256:3a050d93f06c6fe8d1d14c7b4cdd4e5e1b0c4a7b64e6bb9f8a0b3f4b6c6a2d11")
STREAM: list[dict[str, Any]] = [
    {"status": "The push refers to repository [10.213.0.5:5000/gaps-b4ece0d6/x]"},
    *({"status": "Preparing", "progressDetail": {}, "id": d[7:19]} for d in reversed(DIFF_IDS)),
    {"status": "Mounted from gaps-b37b7d7/x", "progressDetail": {}, "id": "32faf85f81fa"},
    {"status": "Layer already exists", "progressDetail": {}, "id": "96ec6d362bee"},
    {"status": "Mounted from gaps-b37b7d7/x", "progressDetail": {}, "id": "bfb5e82cd2f1"},
    {"status": "Mounted from gaps-b37b7d7/x", "progressDetail": {}, "id": "df4199fbf21e"},
    {"status": "Pushing", "progressDetail": {"current": 33280, "total": 1988895}, "id": "3a050d93f06c"},
    {"status": "Pushing", "progressDetail": {"current": 1990656, "total": 1988895}, "id": "3a050d93f06c"},
    {"status": "Pushed", "progressDetail": {}, "id": "3a050d93f06c"},
    {"status": "1: digest: sha256:2968ad8c size: 1362"},
    {"progressDetail": {}, "aux": {"Tag": "1", "Digest": "sha256:2968ad8c", "Size": 1362}},
]
LAYERS: list[dict[str, Any]] = [  # the manifest: blob digests differ from the diff ids; size is the gzip size
    {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1068784, "digest": "sha256:f025a350a5ef" + "0" * 52},
    {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 166, "digest": "sha256:75c9d93bb3ed" + "0" * 52},
    {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1049123, "digest": "sha256:32f85c47a986" + "0" * 52},
    {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 846, "digest": "sha256:d01bda2f72a6" + "0" * 52},
    {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 633031, "digest": "sha256:4b5d1e0a9c77" + "0" * 52},
]
MANIFEST = {"schemaVersion": 2, "config": {"digest": "sha256:c0nf1g", "size": 3000}, "layers": LAYERS}


def test_stream_names_uploaded_layers_and_manifest_digest() -> None:
    seen: list[int] = []
    stats = read_push_stream(iter(STREAM), "10.213.0.5:5000/gaps-b4ece0d6/x:1", seen.append)
    assert (stats.layers_pushed, stats.layers_existing) == (1, 4)
    assert stats.pushed_ids == {"3a050d93f06c"} and stats.digest == "sha256:2968ad8c"
    assert stats.bytes_pushed == sum(seen) == 1990656  # raw progress, not the wire
    assert stats.bytes_sent == 1990656  # until the manifest says otherwise


def test_only_uploaded_layers_count_at_their_compressed_size() -> None:
    stats = read_push_stream(iter(STREAM), "r/x:1")
    assert uploaded_bytes(MANIFEST, DIFF_IDS, stats.pushed_ids) == 633031
    every = {d[7:19] for d in DIFF_IDS}
    assert uploaded_bytes(MANIFEST, DIFF_IDS, every) == sum(layer["size"] for layer in LAYERS)
    assert uploaded_bytes(MANIFEST, DIFF_IDS, set()) == 0


def test_wire_bytes_win_over_raw_progress() -> None:
    assert PushStats("r/x:1", 1, 0, 2000, frozenset({"a"}), "sha256:1", wire_bytes=700).bytes_sent == 700
    assert PushStats("r/x:1", 0, 3, 0, wire_bytes=0).bytes_sent == 0


def test_a_blob_shared_by_two_layers_counts_once() -> None:
    same = "sha256:" + "e" * 64
    diff_ids = ("sha256:" + "1" * 64, "sha256:" + "2" * 64, "sha256:" + "1" * 64)
    manifest = {"layers": [{"digest": same, "size": 32}, {"digest": "sha256:" + "f" * 64, "size": 900},
                           {"digest": same, "size": 32}]}
    assert uploaded_bytes(manifest, diff_ids, {"111111111111", "222222222222"}) == 932


def test_ids_that_are_blob_digests_map_too() -> None:
    # a store that names push events by blob digest, not diff id
    assert uploaded_bytes(MANIFEST, DIFF_IDS, {"32f85c47a986", "d01bda2f72a6"}) == 1049123 + 846


def test_a_pushed_layer_missing_from_the_manifest_is_an_error() -> None:
    with pytest.raises(ValueError, match="pushed layer 0123456789ab is not in the manifest"):
        uploaded_bytes(MANIFEST, DIFF_IDS, {"0123456789ab"})
    with pytest.raises(TypeError):
        uploaded_bytes({"manifests": []}, DIFF_IDS, {"3a050d93f06c"})


def test_split_repo() -> None:
    assert split_repo("10.213.0.5:5000/team/trainer") == Repo("10.213.0.5:5000", "team/trainer")
    assert split_repo("localhost/x") == Repo("localhost", "x")
    hub = split_repo("busybox")
    assert hub == Repo("docker.io", "library/busybox") and hub.api_host == "registry-1.docker.io"
    assert split_repo("docker.io/team/x") == Repo("docker.io", "team/x")


REGISTRY_CONFIG = {"InsecureRegistryCIDRs": ["127.0.0.0/8", "10.9.0.0/16"],
                   "IndexConfigs": {"10.213.0.5:5000": {"Secure": False}, "docker.io": {"Secure": True}}}


@pytest.mark.parametrize(("index", "insecure"), [
    ("10.213.0.5:5000", True), ("docker.io", False), ("127.0.0.1:5000", True), ("10.9.3.4", True),
    ("10.10.0.1:5000", False), ("registry.example:5000", False), ("localhost:5000", True),
])
def test_is_insecure_follows_docker(index: str, insecure: bool) -> None:
    assert is_insecure(REGISTRY_CONFIG, index) is insecure


def test_parse_challenge() -> None:
    assert parse_challenge('Bearer realm="https://auth.example/token",service="registry.example",'
                           'scope="repository:t/x:pull"') == (
        "bearer", {"realm": "https://auth.example/token", "service": "registry.example", "scope": "repository:t/x:pull"})
    assert parse_challenge('Basic realm="Registry"') == ("basic", {"realm": "Registry"})


# -- the reader against a loopback registry -------------------------------------------------

# A containerd-store workstation's push: the image's manifest and an attestation manifest, whose
# blob (named by its digest in the push events) is uploaded too.
ATTESTATION = {"config": {"digest": "sha256:" + "c" * 64, "size": 167},
               "layers": [{"mediaType": "application/vnd.in-toto+json", "size": 1066,
                           "digest": "sha256:a77e57a71000" + "0" * 52}]}
INDEX = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [{"digest": "sha256:arm"}, {"digest": "sha256:amd"}, {"digest": "sha256:att"}]}
CHILDREN = {"sha256:arm": {"config": {"digest": "sha256:other"}, "layers": []}, "sha256:amd": MANIFEST,
            "sha256:att": ATTESTATION}


class FakeRegistry(BaseHTTPRequestHandler):
    """A v2 registry that wants AUTH ('bearer' via /token, 'basic', or none)."""

    auth = "bearer"
    unauthorized: ClassVar[list[str]] = []  # paths answered 401
    connections: ClassVar[list[int]] = []  # one per connection (HTTP/1.0: one per request), TLS attempts too

    def log_message(self, *args: Any) -> None:
        pass

    def handle(self) -> None:
        self.connections.append(self.client_address[1])
        super().handle()

    def _send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        basic = "Basic " + base64.b64encode(b"ann:pw").decode()
        if url.path == "/token":
            query = parse_qs(url.query)
            ok = self.headers.get("Authorization") == basic and query["scope"] == ["repository:team/x:pull"]
            self._send(200 if ok else 401, {"token": "tok-1"} if ok else {})
            return
        want = {"bearer": "Bearer tok-1", "basic": basic, "none": ""}[self.auth]
        if self.headers.get("Authorization", "") != want:
            challenge = (f'Bearer realm="http://{self.headers["Host"]}/token",service="fake"' if self.auth == "bearer"
                         else 'Basic realm="fake"')
            self.unauthorized.append(url.path)
            self._send(401, {"errors": [{"code": "UNAUTHORIZED"}]}, {"WWW-Authenticate": challenge})
            return
        ref = url.path.rsplit("/", 1)[-1]
        body = INDEX if ref == "sha256:idx" else CHILDREN.get(ref)
        self._send(200, body) if body is not None else self._send(404, {})


@pytest.fixture
def registry() -> Iterator[tuple[str, type[FakeRegistry]]]:
    handler = type("Handler", (FakeRegistry,), {"unauthorized": [], "connections": []})
    with serving(handler) as address:
        yield address, handler


@pytest.mark.parametrize("auth", ["bearer", "basic", "none"])
def test_reader_answers_the_challenge_and_picks_the_child_of_an_index(
        registry: tuple[str, type[FakeRegistry]], auth: str) -> None:
    address, handler = registry
    handler.auth = auth
    reader = ManifestReader(Repo(address, "team/x"), {"username": "ann", "password": "pw"}, insecure=True, timeout=5)
    assert image_manifest(reader, "sha256:idx", "sha256:c0nf1g") == MANIFEST
    assert image_manifest(reader, "sha256:amd", "sha256:c0nf1g") == MANIFEST
    # one challenge, answered once: the header is reused for the later GETs
    assert handler.unauthorized == ([] if auth == "none" else ["/v2/team/x/manifests/sha256:idx"])


def test_reader_errors_say_what_failed_and_never_show_secrets(registry: tuple[str, type[FakeRegistry]]) -> None:
    address, handler = registry
    handler.auth = "bearer"
    reader = ManifestReader(Repo(address, "team/x"), {"username": "ann", "password": "wrong-pw"}, insecure=True,
                            timeout=5)
    with pytest.raises(RegistryAPIError, match=r"token request to http://127\.0\.0\.1:[0-9]+/token answered HTTP 401") as err:
        reader.manifest("sha256:amd")
    assert "wrong-pw" not in str(err.value)
    handler.auth = "basic"
    with pytest.raises(RegistryAPIError, match="wants a login and Docker has none"):
        ManifestReader(Repo(address, "team/x"), {}, insecure=True, timeout=5).manifest("sha256:amd")
    with pytest.raises(RegistryAPIError, match="not reachable"):
        ManifestReader(Repo("127.0.0.1:9", "team/x"), {}, insecure=True, timeout=5).manifest("sha256:amd")


def test_a_settled_reader_goes_straight_to_the_scheme_the_registry_answers(
        registry: tuple[str, type[FakeRegistry]]) -> None:
    address, handler = registry
    handler.auth = "none"
    unsettled = ManifestReader(Repo(address, "team/x"), {}, insecure=True, timeout=5)
    assert unsettled.manifest("sha256:amd") == CHILDREN["sha256:amd"]
    assert len(handler.connections) == 2  # https first (a failed TLS handshake), then http
    reader = ManifestReader(Repo(address, "team/x"), {}, insecure=True, timeout=5)
    reader.settle()
    handler.connections.clear()
    assert reader.manifest("sha256:amd") == CHILDREN["sha256:amd"] and len(handler.connections) == 1
    nowhere = ManifestReader(Repo("127.0.0.1:9", "team/x"), {}, insecure=True, timeout=5)
    nowhere.settle()  # no answer on either scheme: both are still tried, and named
    with pytest.raises(RegistryAPIError, match=r"not reachable over https://127\.0\.0\.1:9 or http://127\.0\.0\.1:9"):
        nowhere.manifest("sha256:amd")


@pytest.mark.parametrize("message", ["no basic auth credentials", "unauthorized: authentication required",
                                     "denied: requested access to the resource is denied"])
def test_a_refused_push_says_which_registry_to_log_in_to(message: str) -> None:
    with pytest.raises(LocalError) as caught:
        read_push_stream(iter([*STREAM[:2], {"errorDetail": {"message": message}, "error": message}]),
                         "10.213.0.5:5001/team/x:1")
    assert caught.value.message == f"pushing 10.213.0.5:5001/team/x:1 failed: {message}"
    assert caught.value.hint is not None and "`docker login 10.213.0.5:5001` on this workstation" in caught.value.hint
    assert "$DOCKER_CONFIG" in caught.value.hint


def test_other_push_failures_keep_the_reachability_hint() -> None:
    with pytest.raises(LocalError) as caught:
        read_push_stream(iter([{"error": "blob upload unknown"}]), "10.213.0.5:5000/team/x:1")
    assert caught.value.hint == "check the registry is reachable from here and `docker login` if it needs auth"


# -- the Pusher through deployer.local (FakeClient for the daemon, the loopback registry) -----

WITHOUT_DIGEST = [chunk for chunk in STREAM if "aux" not in chunk]
NOTHING_UPLOADED = [chunk for chunk in STREAM if chunk.get("status") not in ("Pushing", "Pushed")]


def _pusher_client(address: str, stream: list[dict[str, Any]]) -> tuple[Pusher, FakeClient]:
    fake = FakeClient(info_json={"RegistryConfig": {"IndexConfigs": {address: {"Secure": False}}}})
    fake.add_image("team/x:1", "sha256:" + "a" * 64, diff_ids=DIFF_IDS)
    fake.push_streams[f"{address}/team/x"] = stream
    image = ImageInfo("team/x:1", "sha256:" + "a" * 64, DIFF_IDS, 0, "linux", "amd64", (), "sha256:c0nf1g")
    return Pusher(image, fake), fake


def test_the_pusher_reads_the_wire_bytes_back_with_the_docker_login(
        registry: tuple[str, type[FakeRegistry]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address, handler = registry
    handler.auth = "bearer"
    auth = base64.b64encode(b"ann:pw").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {address: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    pusher, fake = _pusher_client(address, WITHOUT_DIGEST)
    fake.api.digests[f"{address}/team/x:1"] = "sha256:idx"  # no aux record: the daemon asks the registry
    stats, pushed = pusher.push(address)
    assert pushed and stats.remote_ref == f"{address}/team/x:1"
    assert ("tag", "sha256:" + "a" * 64, f"{address}/team/x", "1") in fake.calls
    assert stats.wire_bytes == stats.bytes_sent == 633031  # the index's amd64 child, at the compressed size
    # and the blob of each layer, for a containerd-store host's content records after its pull
    gzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    assert stats.records == tuple((d, Descriptor(gzip, layer["digest"], layer["size"]))
                                  for d, layer in zip(DIFF_IDS, LAYERS, strict=True))
    assert stats.records_from == "sha256:idx"  # what a pull of the image gives as its id on that store
    assert pusher.push(address) == (stats, False)  # once per ship


def test_an_attestation_pushed_beside_the_image_counts_too(registry: tuple[str, type[FakeRegistry]],
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address, handler = registry
    handler.auth = "none"
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    attested = [*STREAM[:-2], {"status": "Pushed", "progressDetail": {}, "id": "a77e57a71000"},
                {"progressDetail": {}, "aux": {"Tag": "1", "Digest": "sha256:idx", "Size": 900}}]
    pusher, _ = _pusher_client(address, attested)
    stats, _ = pusher.push(address)
    assert stats.wire_bytes == 633031 + 1066  # the image's new layer and the attestation's blob
    assert [d for d, _ in stats.records] == list(DIFF_IDS)  # the records are the image's layers only
    with pytest.raises(ValueError):  # without the attestation manifest its blob is in no manifest
        uploaded_bytes(MANIFEST, DIFF_IDS, {"4b5d1e0a9c77", "a77e57a71000"})
    assert uploaded_bytes(MANIFEST, DIFF_IDS, {"3a050d93f06c", "a77e57a71000"}, [ATTESTATION]) == 633031 + 1066


def test_a_manifest_that_cannot_be_read_back_leaves_the_raw_count(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    pusher = _pusher_client("127.0.0.1:9", WITHOUT_DIGEST)[0]  # the daemon knows no digest for it
    stats, _ = pusher.push("127.0.0.1:9")
    assert stats.wire_bytes is None and stats.bytes_sent == 1990656 and stats.records == ()
    pusher = _pusher_client("127.0.0.1:9", STREAM)[0]  # a digest, but nothing listens there
    assert pusher.push("127.0.0.1:9")[0].wire_bytes is None


def test_a_push_that_uploads_nothing_reads_nothing_back() -> None:
    pusher, fake = _pusher_client("10.213.0.5:5000", NOTHING_UPLOADED)
    assert pusher.push("10.213.0.5:5000")[0].wire_bytes == 0
    assert [call[0] for call in fake.calls] == ["info", "history", "tag", "push"]  # no sizes: no stages


def test_a_push_the_daemon_refuses_is_a_local_error_for_every_caller() -> None:
    pusher, fake = _pusher_client("10.213.0.5:5000", STREAM)
    fake.api.fail["push"] = docker.errors.APIError("500 Server Error", explanation="connection refused")
    for _ in range(2):
        with pytest.raises(LocalError) as caught:
            pusher.push("10.213.0.5:5000")
        assert caught.value.message == "local Docker: pushing 10.213.0.5:5000/team/x:1: connection refused"
        assert caught.value.hint == "check the registry is reachable from this workstation"
    assert [call[0] for call in fake.calls] == ["info", "history", "tag", "push"]  # no sizes: no stages


def test_an_early_push_is_done_once_and_charged_to_the_first_host_that_asks() -> None:
    pusher, fake = _pusher_client("10.213.0.5:5000", NOTHING_UPLOADED)
    pusher.start("10.213.0.5:5000")  # in the background, while the hosts are checked
    first, second = pusher.push("10.213.0.5:5000"), pusher.push("10.213.0.5:5000")
    assert first[1] and not second[1] and first[0] == second[0]
    assert [call[0] for call in fake.calls] == ["info", "history", "tag", "push"]  # no sizes: no stages


def test_an_early_push_that_fails_fails_every_host() -> None:
    pusher, fake = _pusher_client("10.213.0.5:5000", STREAM)
    fake.api.fail["push"] = docker.errors.APIError("500 Server Error", explanation="connection refused")
    pusher.start("10.213.0.5:5000")
    for _ in range(2):
        with pytest.raises(LocalError, match="connection refused"):
            pusher.push("10.213.0.5:5000")
    assert [call[0] for call in fake.calls] == ["info", "history", "tag", "push"]  # no sizes: no stages


def _staged_pusher(address: str) -> tuple[Pusher, FakeClient, str]:
    """Five layers of 100 MB each, none pushed before: two stages go ahead of the image."""
    pusher, fake = _pusher_client(address, NOTHING_UPLOADED)
    fake.api.histories["sha256:" + "a" * 64] = [{"Size": 100 << 20} for _ in DIFF_IDS] + [{"Size": 0}]
    digest = "sha256:" + "1" * 64
    fake.push_streams[f"{address}/team/x:{STAGE_TAG}"] = [  # each stage's push (the fake has one per tag)
        {"status": "Pushed", "progressDetail": {}, "id": DIFF_IDS[0][7:19]},
        {"progressDetail": {}, "aux": {"Tag": STAGE_TAG, "Digest": digest, "Size": 500}}]
    return pusher, fake, digest


def test_a_first_push_sends_stages_ahead_for_the_hosts_to_pull_meanwhile() -> None:
    pusher, fake, digest = _staged_pusher("10.213.0.5:5000")
    got = list(pusher.stages("10.213.0.5:5000"))  # begins the push; each stage as it is pushed
    assert got == [(digest, 2), (digest, 3)]  # 500 MB to upload, cut in three: 200, 100, then the image's 200
    stats, mine = pusher.push("10.213.0.5:5000")
    assert mine and pusher.pushed("10.213.0.5:5000")
    names = [call[0] for call in fake.calls]
    assert names == ["info", "history", "load_image", "tag", "push", "tag", "push", "remove_image", "remove_image",
                     "tag", "push"]
    stage_tags = [call for call in fake.calls if call[0] == "tag"][:2]
    assert all(call[2:] == ("10.213.0.5:5000/team/x", STAGE_TAG) for call in stage_tags)
    assert stage_tags[0][1] != stage_tags[1][1]  # two stage images, each its own config
    assert [call[1] for call in fake.calls if call[0] == "remove_image"] == [call[1] for call in stage_tags]
    assert stats.layers_pushed == 2 and stats.pushed_ids == {DIFF_IDS[0][7:19]}  # what the stages uploaded
    # the next push of these layers (a re-ship) sends no stages and spends no docker call on them
    again, fake2 = _pusher_client("10.213.0.5:5000", NOTHING_UPLOADED)
    assert list(again.stages("10.213.0.5:5000")) == []
    again.push("10.213.0.5:5000")
    assert [call[0] for call in fake2.calls] == ["tag", "push"]


def test_a_stage_that_fails_to_push_leaves_the_image_to_push_it_all() -> None:
    pusher, fake, _ = _staged_pusher("10.213.0.5:5000")
    fake.push_streams[f"10.213.0.5:5000/team/x:{STAGE_TAG}"] = [{"error": "blob upload unknown"}]
    assert list(pusher.stages("10.213.0.5:5000")) == []
    stats, _ = pusher.push("10.213.0.5:5000")  # the image's own push, as without stages
    assert [call[0] for call in fake.calls][-3:] == ["remove_image", "tag", "push"] and stats.layers_pushed == 0


def test_the_stage_feed_hands_each_stage_to_every_follower_until_closed() -> None:
    feed = StageFeed()
    first, second = feed.follow(), feed.follow()
    feed.put("sha256:1", 1)
    assert next(first) == ("sha256:1", 1)
    feed.put("sha256:2", 3)
    feed.close()
    assert list(first) == [("sha256:2", 3)] and list(second) == [("sha256:1", 1), ("sha256:2", 3)]


def test_with_stages_counts_what_the_stages_uploaded() -> None:
    image = PushStats("r/x:1", 1, 3, 10, frozenset({"c"}), "sha256:f")
    ahead = [PushStats("r/x:s", 1, 0, 100, frozenset({"a"}), "sha256:1"),
             PushStats("r/x:s", 1, 1, 200, frozenset({"b"}), "sha256:2")]
    assert with_stages(image, ahead) == PushStats("r/x:1", 3, 1, 310, frozenset({"a", "b", "c"}), "sha256:f")
    assert with_stages(image, []) == image
