"""`deploy ship --via registry` to Docker 28 hosts: the push is deployer's own zstd blobs under an OCI
manifest (deployer.ship.blobpush), the hosts pull it on either image store, and the image is the
workstation's. A ship with a Docker 20.10 host among its pullers, or with --codec gzip (or a
playbook's ship.codec: gzip), pushes with `docker push`; a later zstd push names the layers that push left by their gzip blobs.

What the registry holds is read from the registry itself, every blob checked against its digest
and each layer against the workstation's diff ids; the uplink's byte counter shows what crossed.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import zstandard

from tests.conftest import DeployRunner, Testbed
from tests.integration.image_support import config_digest_of, forget_shipped, remove_image, scratch_image

ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def registry_manifest(testbed: Testbed, tag: str) -> dict[str, Any]:
    repo, _, ref = tag.rpartition(":")
    res = requests.get(f"http://{testbed.registry}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, timeout=30)
    res.raise_for_status()
    return dict(res.json())


def registry_blob(testbed: Testbed, tag: str, digest: str) -> bytes:
    res = requests.get(f"http://{testbed.registry}/v2/{tag.rpartition(':')[0]}/blobs/{digest}", timeout=60)
    res.raise_for_status()
    assert "sha256:" + hashlib.sha256(res.content).hexdigest() == digest
    return res.content


def ship(deploy_cli: DeployRunner, hosts: str, tag: str, *extra: str, env: dict[str, str] | None = None
         ) -> dict[str, dict[str, Any]]:
    # --lock-wait: another ship to these hosts (a parallel test run) must not fail this one
    code, out, err = deploy_cli("ship", "--host", hosts, "--image", tag, "--via", "registry", "--json",
                                "--lock-wait", "90", *extra, timeout=240, env=env)
    assert code == 0, err
    return {r["host"]: r for r in json.loads(out)}


@pytest.mark.parametrize("host", ["gpu02", "gpu01"])  # Docker 28: classic store, containerd store
def test_a_registry_ship_to_docker_28_pushes_zstd_blobs_the_host_pulls(
        testbed: Testbed, deploy_cli: DeployRunner, host: str, tmp_path: Path) -> None:
    ws = testbed.docker("ws", timeout=300)
    tag = f"zstd-{uuid.uuid4().hex[:10]}/app:1"
    image = scratch_image(ws, tag, 3_000_000)  # a layer no host has: a complete pull on either store
    try:
        tx_before = testbed.uplink_bytes()[0]
        rec = ship(deploy_cli, host, tag, env={"XDG_CACHE_HOME": str(tmp_path)})[host]
        tx = testbed.uplink_bytes()[0] - tx_before
        assert rec["ok"] and rec["via"] == "registry" and rec["verified"], rec
        assert rec["image_id"] == image.id and config_digest_of(testbed.docker(host), tag) == image.id

        manifest = registry_manifest(testbed, tag)
        assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        assert manifest["config"]["digest"] == image.id  # the workstation's config: the same image
        diff_ids = image.attrs["RootFS"]["Layers"]
        assert [layer["mediaType"] for layer in manifest["layers"]] == [ZSTD] * len(diff_ids)
        for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True):
            raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(registry_blob(testbed, tag, layer["digest"])))
            assert "sha256:" + hashlib.sha256(raw.read()).hexdigest() == diff_id
        # the whole image was new to the registry: every blob was uploaded, counted compressed
        assert rec["bytes_sent"] == sum(layer["size"] for layer in manifest["layers"]), (rec, manifest)
        assert tx >= 0.97 * rec["bytes_sent"], (tx, rec)  # and it did cross the uplink
    finally:
        forget_shipped(testbed, tag, [host])


def test_a_reships_new_layer_goes_up_as_it_is_compressed_and_the_host_pulls_it_whole(
        testbed: Testbed, deploy_cli: DeployRunner, tmp_path: Path) -> None:
    host, ws = "gpu02", testbed.docker("ws", timeout=300)
    repo = f"zstd-{uuid.uuid4().hex[:10]}/app"
    env = {"XDG_CACHE_HOME": str(tmp_path)}  # the workstation remembers what it pushed to the repo
    scratch_image(ws, f"{repo}:1", 1_000_000)
    try:
        ship(deploy_cli, host, f"{repo}:1", env=env)
        image = scratch_image(ws, f"{repo}:2", 40_000_000, base=f"{repo}:1")  # compressing it takes a while
        code, out, err = deploy_cli("-v", "ship", "--host", host, "--image", f"{repo}:2", "--via", "registry",
                                    "--json", "--lock-wait", "90", timeout=240, env=env)
        assert code == 0, err
        rec = json.loads(out)[0]
        assert rec["ok"] and rec["verified"] and rec["image_id"] == image.id, rec
        assert config_digest_of(testbed.docker(host), f"{repo}:2") == image.id
        new = image.attrs["RootFS"]["Layers"][-1]
        assert f"uploading layer {new[7:19]} of {repo}:2 as it is compressed" in err
        # the registry holds it whole (its digest checked by registry_blob), the rest named as pushed before
        layers = registry_manifest(testbed, f"{repo}:2")["layers"]
        assert layers[:-1] == registry_manifest(testbed, f"{repo}:1")["layers"]
        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(registry_blob(testbed, f"{repo}:2",
                                                                                  layers[-1]["digest"])))
        assert "sha256:" + hashlib.sha256(raw.read()).hexdigest() == new
        assert rec["bytes_sent"] == layers[-1]["size"], (rec, layers)
    finally:
        forget_shipped(testbed, f"{repo}:1", [host])
        forget_shipped(testbed, f"{repo}:2", [host])


def test_docker_20_among_the_pullers_or_codec_gzip_push_with_docker_and_zstd_reuses_that_push(
        testbed: Testbed, deploy_cli: DeployRunner, tmp_path: Path) -> None:
    ws = testbed.docker("ws", timeout=300)
    tag = f"zstd-{uuid.uuid4().hex[:10]}/app:1"
    scratch_image(ws, tag, 2_000_000)
    env = {"XDG_CACHE_HOME": str(tmp_path)}  # both ships share what this workstation knows, as a user's would
    v2 = tag.replace(":1", ":2")
    try:
        # cpu01 runs Docker 20.10, which cannot pull zstd layers: the push is Docker's own (gzip)
        recs = ship(deploy_cli, "gpu02,cpu01", tag, env=env)
        assert all(r["ok"] and r["via"] == "registry" and r["verified"] for r in recs.values()), recs
        first = registry_manifest(testbed, tag)
        assert [layer["mediaType"] for layer in first["layers"]] == [DOCKER_GZIP]

        # v2: one more layer on top; to gpu02 alone, a zstd push that names the first layer by the
        # gzip blob in the registry (not sent again) and uploads only the new one, as zstd
        _build_on(ws, tag, v2)
        rec = ship(deploy_cli, "gpu02", v2, env=env)["gpu02"]
        assert rec["ok"] and rec["verified"] and rec["layers_sent"] == 1, rec
        second = registry_manifest(testbed, v2)
        assert {k: second["layers"][0][k] for k in ("digest", "size")} == \
            {k: first["layers"][0][k] for k in ("digest", "size")}
        assert second["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"  # the same blob
        assert second["layers"][1]["mediaType"] == ZSTD
        assert rec["bytes_sent"] == second["layers"][1]["size"], (rec, second)

        # --codec gzip: Docker's push again, whatever the hosts read
        v3 = tag.replace(":1", ":3")
        ws.api.tag(v2, v3.rpartition(":")[0], "3")
        rec = ship(deploy_cli, "gpu02", v3, "--codec", "gzip", env=env)["gpu02"]
        assert rec["ok"] and rec["verified"], rec
        assert {layer["mediaType"] for layer in registry_manifest(testbed, v3)["layers"]} == {DOCKER_GZIP}

        # a playbook's ship.codec: gzip says the same once, for every `ship -p`
        v4 = tag.replace(":1", ":4")
        _build_on(ws, v3, v4)  # an image gpu02 lacks: a push and a pull
        book = tmp_path / "gzip.yml"
        book.write_text(f"name: gz\nimage: {{ref: '{v4}'}}\nship: {{via: registry, codec: gzip}}\n")
        code, out, err = deploy_cli("ship", "-p", str(book), "--host", "gpu02", "--no-run", "--json",
                                    "--lock-wait", "90", timeout=240, env=env)
        assert code == 0, err
        [rec] = json.loads(out)
        # (the classic store pulls v2's code layer again: it knows that layer by its zstd blob only)
        assert rec["ok"] and rec["verified"] and rec["via"] == "registry" and rec["layers_sent"] >= 1, rec
        assert {layer["mediaType"] for layer in registry_manifest(testbed, v4)["layers"]} == {DOCKER_GZIP}
    finally:
        forget_shipped(testbed, tag, ["gpu02", "cpu01"])
        for ref in (v2, tag.replace(":1", ":3"), tag.replace(":1", ":4")):
            forget_shipped(testbed, ref, ["gpu02"])
        remove_image(ws, tag)


def _build_on(client: Any, base: str, tag: str) -> None:
    """TAG: BASE plus one small layer of its own (a RUN needs a shell, which a scratch image lacks)."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", f"FROM {base}\nCOPY code /code\n".encode()),
                           ("code", uuid.uuid4().hex.encode() * 100)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
