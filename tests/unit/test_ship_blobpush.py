"""The registry route's own push (deployer.ship.blobpush): zstd blobs and an OCI manifest through the
registry API, against a loopback v2 registry that keeps what it is sent and checks every digest;
and which hosts let a ship push that way (deployer.ship.pullers)."""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import pytest
import zstandard
from loopback import serving

from deployer import layercache
from deployer.inventory.host import Host
from deployer.local.cache import Blob, Cache
from deployer.local.fake import FakeClient
from deployer.local.image import ImageInfo
from deployer.local.stages import STAGE_TAG
from deployer.ship.blobpush import (
    OCI_CONFIG,
    OCI_MANIFEST,
    ZSTD_LAYER,
    BlobUnknown,
    RegistryWriter,
    Streamed,
    manifest,
    push_image,
)
from deployer.ship.pullers import Pullers
from deployer.ship.recall import probe_key
from deployer.ship.registry import Pusher
from deployer.ship.registry_api import RegistryAPIError, Repo
from deployer.tarfmt import Descriptor

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class UploadRegistry(BaseHTTPRequestHandler):
    """A v2 registry in memory: bearer tokens from /token (pull scope for reads, pull,push for
    writes), monolithic uploads checked against their digest, manifests whose blobs must be there."""

    protocol_version = "HTTP/1.1"
    blobs: ClassVar[dict[str, bytes]] = {}
    manifests: ClassVar[dict[str, bytes]] = {}
    tokens: ClassVar[list[str]] = []  # the scopes tokens were asked for
    upload_host = ""  # the host upload URLs name (default: the one asked)
    upload_auth: ClassVar[list[str]] = []  # the Authorization header of each upload's PUT
    full: ClassVar[set[str]] = set()  # digests whose upload's PUT fails (the registry's storage is full)
    uploads: ClassVar[dict[str, bytes]] = {}  # what PATCHes sent so far, by upload
    connections: ClassVar[list[int]] = []  # one per connection, TLS attempts too

    def handle(self) -> None:
        self.connections.append(self.client_address[1])
        super().handle()
    requests: ClassVar[list[str]] = []  # "METHOD path" of each request

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding") == "chunked":
            data = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorized(self, scope: str) -> bool:
        if self.headers.get("Authorization") in (f"Bearer {scope}", "Bearer pull,push"):  # push may read too
            return True
        self._body()
        realm = f"http://{self.headers['Host']}/token"
        self._reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                    {"WWW-Authenticate": f'Bearer realm="{realm}",service="fake",scope="repository:team/x:{scope}"'})
        return False

    def _route(self) -> None:
        url = urlparse(self.path)
        self.requests.append(f"{self.command} {url.path}")
        if url.path == "/token":
            scope = parse_qs(url.query)["scope"][0].rsplit(":", 1)[-1]
            basic = "Basic " + base64.b64encode(b"ann:pw").decode()
            if self.headers.get("Authorization") != basic:
                self._reply(401)
                return
            self.tokens.append(scope)
            self._reply(200, json.dumps({"token": scope}).encode())
            return
        if url.path == "/v2/":
            self._reply(200, b"{}")
            return
        writing = self.command in ("POST", "PUT", "PATCH")
        if self.command == "PUT" and "/blobs/uploads/" in url.path:
            self.upload_auth.append(self.headers.get("Authorization", ""))
        if not self._authorized("pull,push" if writing else "pull"):
            return
        prefix = "/v2/team/x/"
        what = url.path.removeprefix(prefix)
        if self.command == "HEAD" and what.startswith("blobs/"):
            self._reply(200 if what[6:] in self.blobs else 404)
        elif self.command == "POST" and what == "blobs/uploads/":
            self._body()
            where = f"http://{self.upload_host}" if self.upload_host else ""
            self._reply(202, headers={"Location": f"{where}{prefix}blobs/uploads/u-{len(self.requests)}?_state=s"})
        elif self.command == "PATCH" and what.startswith("blobs/uploads/"):
            upload = what.removeprefix("blobs/uploads/")
            self.uploads[upload] = self.uploads.get(upload, b"") + self._body()
            self._reply(202, headers={"Location": f"{prefix}blobs/uploads/{upload}?_state=patched",
                                      "Range": f"0-{len(self.uploads[upload]) - 1}"})
        elif self.command == "PUT" and what.startswith("blobs/uploads/"):
            upload = what.removeprefix("blobs/uploads/")
            data, digest = self.uploads.pop(upload, b"") + self._body(), parse_qs(url.query)["digest"][0]
            if digest in self.full:
                self._reply(500, b'{"errors":[{"code":"UNKNOWN","message":"no space left on device"}]}')
                return
            if sha(data) != digest:
                self._reply(400, b'{"errors":[{"code":"DIGEST_INVALID"}]}')
                return
            self.blobs[digest] = data
            self._reply(201, headers={"Docker-Content-Digest": digest})
        elif self.command == "PUT" and what.startswith("manifests/"):
            body = self._body()
            doc = json.loads(body)
            if self.headers.get("Content-Type") != doc.get("mediaType") or any(
                    d["digest"] not in self.blobs for d in (doc["config"], *doc["layers"])):
                self._reply(400, b'{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN"}]}')
                return
            self.manifests[what[10:]] = body
            self._reply(201, headers={"Docker-Content-Digest": sha(body)})
        else:
            self._reply(404)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _route


@pytest.fixture
def registry() -> Iterator[tuple[str, type[UploadRegistry]]]:
    handler = type("Handler", (UploadRegistry,), {"blobs": {}, "manifests": {}, "tokens": [], "requests": [],
                                                  "upload_auth": [], "connections": [], "uploads": {}, "full": set()})
    with serving(handler) as address:
        yield address, handler


def writer(address: str) -> RegistryWriter:
    return RegistryWriter(Repo(address, "team/x"), {"username": "ann", "password": "pw"}, insecure=True, timeout=5)


def layer_blobs(tmp_path: Path, n: int, name: str = "layer") -> dict[str, Blob]:
    """N layers as zstd blob files, by diff id (the digest of each layer's raw bytes)."""
    blobs = {}
    for i in range(n):
        raw = f"{name} {i} ".encode() * 5000
        data = zstandard.ZstdCompressor(level=3).compress(raw)
        path = tmp_path / f"{name}{i}"
        path.write_bytes(data)
        blobs[sha(raw)] = Blob(sha(raw), "zstd", 3, path, sha(data), len(data), len(raw))
    return blobs


CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()


def test_the_manifest_names_the_config_and_the_layers_bottom_first() -> None:
    layers = [Descriptor(ZSTD_LAYER, "sha256:" + "1" * 64, 10), Descriptor(GZIP, "sha256:" + "2" * 64, 20)]
    doc = json.loads(manifest(CONFIG, layers))
    assert doc == {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                   "config": {"mediaType": OCI_CONFIG, "digest": sha(CONFIG), "size": len(CONFIG)},
                   "layers": [d.to_json() for d in layers]}


def test_a_push_uploads_the_blobs_the_registry_lacks_then_the_config_and_the_manifest(
        registry: tuple[str, type[UploadRegistry]], tmp_path: Path) -> None:
    address, handler = registry
    blobs = layer_blobs(tmp_path, 4)
    diff_ids = list(blobs)
    handler.blobs[blobs[diff_ids[1]].digest] = blobs[diff_ids[1]].path.read_bytes()  # a layer shared with another image
    old = b"a gzip blob an earlier `docker push` left"
    handler.blobs[sha(old)] = old
    known = {diff_ids[0]: Descriptor(GZIP, sha(old), len(old))}  # layer 0 is there already, as gzip
    asked: list[str] = []
    stages: list[tuple[str, int]] = []
    sent: list[int] = []

    def blob(diff_id: str) -> Blob:
        asked.append(diff_id)
        return blobs[diff_id]

    stage_config = b'{"stage": 3}'
    pushed = push_image(writer(address), "1", diff_ids, lambda: CONFIG, blob, known, {3: stage_config},
                        lambda digest, n: stages.append((digest, n)), sent.append)
    assert asked == diff_ids[1:]  # layer 0's blob is named as the registry has it: not even compressed
    assert pushed.uploaded == (diff_ids[2], diff_ids[3])
    assert pushed.sent == sum(sent) == blobs[diff_ids[2]].size + blobs[diff_ids[3]].size
    want = [known[diff_ids[0]], *(Descriptor(ZSTD_LAYER, blobs[d].digest, blobs[d].size) for d in diff_ids[1:])]
    assert pushed.layers == tuple(want)
    body = handler.manifests["1"]
    assert pushed.digest == sha(body) and json.loads(body) == json.loads(manifest(CONFIG, want))
    # the stage of the first three layers went up as soon as they were there, under its own tag
    assert stages == [(sha(handler.manifests[STAGE_TAG]), 3)]
    assert json.loads(handler.manifests[STAGE_TAG])["layers"] == [d.to_json() for d in want[:3]]
    assert handler.blobs[sha(stage_config)] == stage_config and handler.blobs[sha(CONFIG)] == CONFIG
    # one token, asked for once: the config's upload comes first, and a token that may push may read
    assert handler.tokens == ["pull,push"]


def test_the_config_goes_up_beside_the_layers_and_its_failure_stops_the_push_at_the_next_layer(
        registry: tuple[str, type[UploadRegistry]], tmp_path: Path) -> None:
    address, handler = registry
    blobs = layer_blobs(tmp_path, 3)
    diff_ids = list(blobs)

    class Watched(RegistryWriter):
        config_up: Future[str] | None = None

        def upload_bytes_beside(self, data: bytes) -> Future[str]:
            self.config_up = super().upload_bytes_beside(data)
            return self.config_up

    w = Watched(Repo(address, "team/x"), {"username": "ann", "password": "pw"}, insecure=True, timeout=5)
    pushed = push_image(w, "1", diff_ids, lambda: CONFIG, blobs.__getitem__)
    assert handler.blobs[sha(CONFIG)] == CONFIG and json.loads(handler.manifests["1"])["config"]["digest"] == sha(CONFIG)
    assert pushed.uploaded == tuple(diff_ids) and handler.tokens == ["pull,push"]  # one login for both connections
    handler.full.add(sha(CONFIG))  # the next push's config fails (its layers are new)
    other = layer_blobs(tmp_path, 3, name="other")
    asked: list[str] = []

    def blob(diff_id: str) -> Blob:
        asked.append(diff_id)
        assert w.config_up is not None
        w.config_up.exception(timeout=5)  # its config's upload is over (refused) while this layer goes
        return other[diff_id]

    with pytest.raises(RegistryAPIError, match=rf"uploading {sha(CONFIG)} answered HTTP 500: .*no space left"):
        push_image(w, "2", list(other), lambda: CONFIG, blob)
    assert asked == list(other)[:1] and "2" not in handler.manifests  # no layer after it, no manifest


def test_a_layer_still_being_compressed_goes_up_as_it_grows_then_is_named_by_its_digest(
        registry: tuple[str, type[UploadRegistry]], tmp_path: Path) -> None:
    address, handler = registry
    blobs = layer_blobs(tmp_path, 3)
    diff_ids = list(blobs)
    top = blobs[diff_ids[2]]
    data = top.path.read_bytes()
    pieces = [data[i:i + 1000] for i in range(0, len(data), 1000)]  # as the compressor writes them
    finished: list[bool] = []

    def chunks() -> Iterator[bytes]:
        yield from pieces
        finished.append(True)  # the blob is complete only once its last byte was read

    def blob(diff_id: str) -> Blob | Streamed:
        return Streamed(chunks, lambda: top) if diff_id == diff_ids[2] else blobs[diff_id]

    sent: list[int] = []
    pushed = push_image(writer(address), "1", diff_ids, lambda: CONFIG, blob, on_bytes=sent.append)
    assert finished and handler.blobs[top.digest] == data and not handler.uploads
    assert pushed.uploaded == tuple(diff_ids) and pushed.sent == sum(sent) == sum(b.size for b in blobs.values())
    assert pushed.layers[2] == Descriptor(ZSTD_LAYER, top.digest, top.size)
    assert json.loads(handler.manifests["1"])["layers"][2]["digest"] == top.digest
    # the streamed layer's digest is known at its end only: no HEAD for it, one PATCH with its bytes
    asked = [r for r in handler.requests if r.startswith(("HEAD", "PATCH"))]
    assert asked == [f"HEAD /v2/team/x/blobs/{blobs[diff_ids[0]].digest}",
                     f"HEAD /v2/team/x/blobs/{blobs[diff_ids[1]].digest}",
                     asked[2]] and asked[2].startswith("PATCH /v2/team/x/blobs/uploads/")


def test_a_streamed_upload_whose_bytes_are_not_its_digest_fails(registry: tuple[str, type[UploadRegistry]],
                                                                tmp_path: Path) -> None:
    address, handler = registry
    blobs = layer_blobs(tmp_path, 1)
    (diff_id, good), = blobs.items()
    streamed = Streamed(lambda: [b"not the blob"], lambda: good)
    with pytest.raises(RegistryAPIError, match=f"uploading {good.digest} answered HTTP 400.*DIGEST_INVALID"):
        push_image(writer(address), "1", [diff_id], lambda: CONFIG, lambda d: streamed)
    assert good.digest not in handler.blobs and "1" not in handler.manifests


def test_a_known_blob_the_registry_lost_is_sent_again(registry: tuple[str, type[UploadRegistry]],
                                                     tmp_path: Path) -> None:
    address, handler = registry
    blobs = layer_blobs(tmp_path, 2)
    diff_ids = list(blobs)
    known = {d: Descriptor(ZSTD_LAYER, b.digest, b.size) for d, b in blobs.items()}  # pushed once, since collected
    pushed = push_image(writer(address), "2", diff_ids, lambda: CONFIG, blobs.__getitem__, known)
    assert pushed.uploaded == tuple(diff_ids) and set(handler.blobs) >= {b.digest for b in blobs.values()}
    again = push_image(writer(address), "3", diff_ids, lambda: CONFIG, blobs.__getitem__, known)
    assert again.uploaded == () and again.sent == 0 and again.digest == pushed.digest


def test_known_blobs_named_without_asking_fail_the_manifest_if_gone(registry: tuple[str, type[UploadRegistry]],
                                                                   tmp_path: Path) -> None:
    address, handler = registry
    blobs = layer_blobs(tmp_path, 3)
    diff_ids = list(blobs)
    known = {d: Descriptor(ZSTD_LAYER, b.digest, b.size) for d, b in blobs.items()}
    first = push_image(writer(address), "1", diff_ids, lambda: CONFIG, blobs.__getitem__)
    handler.requests.clear()
    again = push_image(writer(address), "2", diff_ids, lambda: CONFIG, blobs.__getitem__, known, check_known=False)
    assert again.digest == first.digest and again.uploaded == ()
    assert not [r for r in handler.requests if r.startswith("HEAD")]  # a re-ship's known layers: not asked about
    del handler.blobs[blobs[diff_ids[1]].digest]  # collected by the registry since
    with pytest.raises(BlobUnknown, match=r"lacks a blob the manifest names.*MANIFEST_BLOB_UNKNOWN"):
        push_image(writer(address), "3", diff_ids, lambda: CONFIG, blobs.__getitem__, known, check_known=False)


def test_an_upload_the_registry_refuses_says_what_and_why(registry: tuple[str, type[UploadRegistry]],
                                                          tmp_path: Path) -> None:
    address, _ = registry
    [(diff_id, good)] = layer_blobs(tmp_path, 1).items()
    lying = Blob(diff_id, "zstd", 3, good.path, "sha256:" + "0" * 64, good.size, good.raw_size)
    with pytest.raises(RegistryAPIError, match=r"uploading sha256:0{64} answered HTTP 400: .*DIGEST_INVALID"):
        push_image(writer(address), "1", [diff_id], lambda: CONFIG, lambda d: lying)


def test_the_login_never_goes_to_another_host_an_upload_url_names(registry: tuple[str, type[UploadRegistry]],
                                                                   tmp_path: Path) -> None:
    address, handler = registry
    [(diff_id, blob)] = layer_blobs(tmp_path, 1).items()
    push_image(writer(address), "1", [diff_id], lambda: CONFIG, lambda d: blob)
    assert handler.upload_auth and all(a == "Bearer pull,push" for a in handler.upload_auth)
    handler.upload_auth.clear()
    handler.upload_host = address.replace("127.0.0.1", "localhost")  # the same server, by another name
    other = layer_blobs(tmp_path, 1, name="other")
    with pytest.raises(RegistryAPIError, match="answered HTTP 401"):
        push_image(writer(address), "2", list(other), lambda: CONFIG, other.__getitem__)
    # each upload there (the config's, and the layer's beside it) sent without the token, refused, not answered with it
    assert handler.upload_auth and all(a == "" for a in handler.upload_auth)


def test_a_plain_http_registry_is_remembered_so_the_next_push_skips_the_tls_attempt(
        registry: tuple[str, type[UploadRegistry]]) -> None:
    address, handler = registry
    writer(address).settle()
    assert len(handler.connections) == 2  # https first (a failed TLS handshake), then http
    handler.connections.clear()
    again = writer(address)
    again.settle()
    assert len(handler.connections) == 1 and again.has_blob(sha(b"nothing")) is False
    assert len(handler.connections) == 1  # and it stays on that one connection


def _image(diff_ids: list[str]) -> ImageInfo:
    return ImageInfo("team/x:1", "sha256:" + "a" * 64, tuple(diff_ids), 0, "linux", "amd64", (), "sha256:c0nf1g")


def test_the_pusher_falls_back_to_docker_push_when_the_api_push_fails(caplog: pytest.LogCaptureFixture) -> None:
    address = "127.0.0.1:9"  # nothing listens: the API push cannot start
    diff_ids = ["sha256:" + "d" * 64]
    fake = FakeClient(info_json={"Driver": "overlay2", "RegistryConfig": {"IndexConfigs": {address: {"Secure": False}}}})
    fake.add_image("team/x:1", "sha256:" + "a" * 64, diff_ids=diff_ids)
    fake.push_streams[f"{address}/team/x"] = [{"status": "Layer already exists", "id": "d" * 12},
                                              {"progressDetail": {}, "aux": {"Tag": "1", "Digest": "sha256:m", "Size": 9}}]
    asked: list[str] = []
    pusher = Pusher(_image(diff_ids), fake, zstd=lambda registry: asked.append(registry) is None)
    with caplog.at_level(logging.WARNING):
        stats, mine = pusher.push(address)
    assert asked == [address] and mine
    assert stats.digest == "sha256:m" and stats.layers_existing == 1 and ("push" in [c[0] for c in fake.calls])
    assert "through the registry API failed" in caplog.text and "pushing with docker push instead" in caplog.text


def test_a_containerd_store_workstation_pushes_with_docker() -> None:
    diff_ids = ["sha256:" + "d" * 64]
    fake = FakeClient(info_json={"Driver": "overlayfs", "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
                                 "RegistryConfig": {}})
    fake.add_image("team/x:1", "sha256:" + "a" * 64, diff_ids=diff_ids)
    fake.push_streams["reg:5000/team/x"] = [{"progressDetail": {}, "aux": {"Tag": "1", "Digest": "sha256:m", "Size": 9}}]
    stats, _ = Pusher(_image(diff_ids), fake, zstd=lambda registry: True).push("reg:5000")
    assert stats.digest == "sha256:m" and [c[0] for c in fake.calls if c[0] in ("tag", "push")] == ["tag", "push"]


# ---- which ships may push zstd -------------------------------------------------------------

def host(name: str, via: str = "auto", registry: str = "reg:5000") -> Host:
    return Host(name, vars={"ansible_host": f"10.0.0.{len(name)}", "deploy_registry": registry, "deploy_via": via})


def probe_output(version: str) -> str:
    """A probe's output as deployer.facts reads it: Docker's version is all that matters here."""
    info = json.dumps({"ServerVersion": version, "Driver": "overlay2"})
    return f"\n@@deployer arch\nx86_64\n\n@@rc 0\n\n@@deployer docker_info\n{info}\n\n@@rc 0\n"


def test_a_ship_pushes_zstd_only_if_every_host_that_pulls_reads_it() -> None:
    a, b, c = host("a"), host("bb"), host("ccc", via="tarball")
    pullers = Pullers([a, b, c], None, None, parallel=8, wait_s=5)
    pullers.checked("a", "28.5.2")
    pullers.checked("bb", "20.10.24+dfsg1")
    assert not pullers.read_zstd("reg:5000")
    pullers = Pullers([a, b, c], None, None, parallel=8, wait_s=5)
    pullers.checked("a", "28.5.2")
    pullers.checked("bb", "20.10.24", registry_route=False)  # it takes the tarball route: pulls nothing
    assert pullers.read_zstd("reg:5000")  # c is a tarball host from the start: never asked about
    pullers = Pullers([a, b], None, None, parallel=8, wait_s=5)
    pullers.checked("a", "28.5.2")
    pullers.checked("bb", None)  # its check failed
    assert pullers.read_zstd("reg:5000")
    gzip = Pullers([a], None, "gzip", parallel=8, wait_s=5)
    gzip.checked("a", "28.5.2")
    assert not gzip.read_zstd("reg:5000")  # --codec gzip
    other = Pullers([a, host("dddd", registry="other:5000")], None, None, parallel=8, wait_s=5)
    other.checked("a", "28.5.2")
    assert other.read_zstd("reg:5000")  # the host of another registry is not waited for


def test_the_push_waits_for_a_check_under_way_and_not_for_one_not_begun() -> None:
    a, b = host("a"), host("bb")
    pullers = Pullers([a, b], None, None, parallel=2, wait_s=5)
    threading.Timer(0.2, pullers.checked, ("a", "28.5.2")).start()
    threading.Timer(0.3, pullers.checked, ("bb", "27.0.1")).start()
    started = time.monotonic()
    assert pullers.read_zstd("reg:5000") and time.monotonic() - started >= 0.25
    # with --parallel 1, bb's check starts only after a's ship: it is not waited for
    serial = Pullers([a, b], None, None, parallel=1, wait_s=5)
    serial.checked("a", "28.5.2")
    started = time.monotonic()
    assert not serial.read_zstd("reg:5000") and time.monotonic() - started < 1
    late = Pullers([a], None, None, parallel=1, wait_s=0.1)
    assert not late.read_zstd("reg:5000")  # not checked in time: of unknown version


def test_a_remembered_probe_answers_before_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    a = host("a")
    layercache.remember_probe(a, probe_key(a), probe_output("28.5.2"), now=time.time() - 30 * 86400)
    started = time.monotonic()
    assert Pullers([a], None, None, parallel=1, wait_s=5).read_zstd("reg:5000")  # no wait, however old
    assert time.monotonic() - started < 1
    layercache.remember_probe(a, probe_key(a), probe_output("20.10.24"))
    old = Pullers([a], None, None, parallel=1, wait_s=5)
    threading.Timer(0.1, old.checked, ("a", "24.0.7")).start()  # upgraded since: its check says so
    assert old.read_zstd("reg:5000")


def test_the_registry_blobs_a_push_left_are_remembered_per_repository(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    one = Descriptor(ZSTD_LAYER, "sha256:" + "1" * 64, 10)
    cache.remember_registry_blobs("reg:5000/team/x", [("sha256:d1", one)])
    cache.remember_registry_blobs("reg:5000/team/x", [("sha256:d2", Descriptor(GZIP, "sha256:" + "2" * 64, 20))])
    assert cache.registry_blobs("reg:5000/team/x") == {"sha256:d1": one,
                                                        "sha256:d2": Descriptor(GZIP, "sha256:" + "2" * 64, 20)}
    assert cache.registry_blobs("reg:5000/team/y") == {}
    (tmp_path / "pushed" / f"{hashlib.sha256(b'reg:5000/team/x').hexdigest()}.json").write_text("{not json")
    assert cache.registry_blobs("reg:5000/team/x") == {}  # a corrupt note is no note
