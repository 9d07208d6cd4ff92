"""`deploy bundle` end to end: the real CLI writes the file, the host's own Docker loads it.

Each test builds fresh images (unique random layers) on the workstation daemon, so which layers
a host has is under the test's control; loaded images are removed again.
"""
from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import zstandard
from image_support import build_random, config_digest_of, remove_image

from deployer.local.tarball import layer_path
from deployer.tarfmt import blob_name

HOST = "airgap01"  # Docker 28, containerd image store


def build(client: docker.DockerClient, tag: str, sizes: list[int], base: str) -> list[str]:
    """Build `tag` FROM base with fresh random layers; returns its diff ids."""
    return list(build_random(client, tag, sizes, base).attrs["RootFS"]["Layers"])


remove = remove_image


@pytest.fixture(scope="module")
def images(testbed: Any) -> Iterator[dict[str, Any]]:
    """A fresh base image and an app image on top of it (2 more layers)."""
    ws = testbed.docker("ws")
    suffix = uuid.uuid4().hex[:10]
    base, app = f"deployer-test/bundle-base:{suffix}", f"deployer-test/bundle-app:{suffix}"
    base_layers = build(ws, base, [1_500_000], "deployer-testbed/busybox:latest")
    app_layers = build(ws, app, [2_000_000], base)
    yield {"base": base, "app": app, "base_layers": base_layers, "app_layers": app_layers,
           "base_id": ws.images.get(base).id, "app_id": ws.images.get(app).id,
           "base_config": config_digest_of(ws, base), "app_config": config_digest_of(ws, app)}
    for name in ("gpu02", HOST):
        host = testbed.docker(name)
        for ref in (app, base):
            remove(host, ref)
    for ref in (app, base):
        remove(ws, ref)


def _ssh_load(testbed: Any, path: Path, command: str, host: str = HOST) -> str:
    res = testbed.ssh(host, command, input=path.read_bytes(), timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout.decode()


def _members(path: Path) -> list[str]:
    raw = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(path.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        return [m.name for m in tar if m.isfile()]


@pytest.mark.parametrize("name", ["gpu02", HOST])  # Docker 28 on overlay2, and on the containerd store
def test_full_bundle_then_delta_for_a_host_that_has_the_base(testbed: Any, deploy_cli: Any, images: dict[str, Any],
                                                              tmp_path: Path, name: str) -> None:
    host = testbed.docker(name)
    containerd = testbed.hosts[name].store == "containerd"
    # on the containerd store a partial load is an OCI layout naming each layer by its diff id
    member = blob_name if containerd else layer_path
    # 1. full bundle of the base: loaded with plain `zstd -dc | docker load` on the host
    full = tmp_path / "base.tar.zst"
    rc, out, err = deploy_cli("bundle", "--image", images["base"], "-o", str(full), "--json")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["layers_included"] == summary["layers_total"] == len(images["base_layers"])
    assert summary["image_id"] == images["base_id"] and summary["for"] is None
    assert summary["bytes"] == full.stat().st_size and not (tmp_path / "base.tar.zst.partial").exists()
    assert summary["load_command"] == "zstd -dc base.tar.zst | docker load"
    _ssh_load(testbed, full, "zstd -dc | docker load", name)
    assert config_digest_of(host, images["base"]) == images["base_config"]

    # 2. delta bundle of the app for that host: only the app's own layers travel
    delta = tmp_path / "app.delta.zst"
    rc, out, err = deploy_cli("bundle", "--image", images["app"], "-o", str(delta), "--for", name, "--json")
    assert rc == 0, err
    summary = json.loads(out)
    own = images["app_layers"][len(images["base_layers"]):]
    assert summary["for"] == name and summary["layers_total"] == len(images["app_layers"])
    assert summary["layers_included"] == len(own) == 2
    names = _members(delta)
    assert {member(d) for d in own} <= set(names)
    assert not {member(d) for d in images["base_layers"]} & set(names)
    assert summary["bytes"] < full.stat().st_size + 2_100_000  # base layers not in it
    loaded = _ssh_load(testbed, delta, "zstd -dc | docker load", name)
    assert images["app"] in loaded
    assert config_digest_of(host, images["app"]) == images["app_config"]
    assert host.images.get(images["app"]).attrs["RootFS"]["Layers"] == images["app_layers"]
    listed = testbed.ssh(name, "docker images --format '{{.Repository}}:{{.Tag}}'").stdout.decode().split()
    assert images["app"] in listed  # complete in the host's store, not only runnable

    # 3. nothing missing any more: a bundle for the host carries no layer at all and still loads
    empty = tmp_path / "app.none.zst"
    rc, out, err = deploy_cli("bundle", "--image", images["app"], "-o", str(empty), "--for", name, "--json")
    assert rc == 0, err
    assert json.loads(out)["layers_included"] == 0
    assert not {member(d) for d in images["app_layers"]} & set(_members(empty))
    _ssh_load(testbed, empty, "zstd -dc | docker load", name)
    assert config_digest_of(host, images["app"]) == images["app_config"]
    for ref in (images["app"], images["base"]):
        remove(host, ref)


def test_gzip_bundle_loads_with_plain_docker_load(testbed: Any, deploy_cli: Any, images: dict[str, Any],
                                                   tmp_path: Path) -> None:
    out_file = tmp_path / "app.tar.gz"
    tag = f"deployer-test/bundle-gz:{uuid.uuid4().hex[:8]}"
    testbed.docker("ws").images.get(images["app"]).tag(tag)
    host = testbed.docker("gpu02")
    try:
        rc, out, err = deploy_cli("bundle", "--image", tag, "-o", str(out_file), "--codec", "gzip", "--level", "1")
        assert rc == 0, err
        assert "load it with: docker load -i app.tar.gz" in err and out == ""
        loaded = host.images.load(out_file.read_bytes())  # the daemon's own gzip reader, no zstd
        assert [config_digest_of(host, i.id) for i in loaded] == [images["app_config"]]
        assert config_digest_of(host, tag) == images["app_config"]
    finally:
        remove(host, tag)
        remove(testbed.docker("ws"), tag)


def test_bad_input(deploy_cli: Any, images: dict[str, Any], tmp_path: Path) -> None:
    rc, _, err = deploy_cli("bundle", "--image", "deployer-test/no-such:image", "-o", str(tmp_path / "x.zst"))
    assert rc == 1 and "not found in the local Docker" in err and "Traceback" not in err
    rc, _, err = deploy_cli("bundle", "--image", images["app"], "-o", str(tmp_path / "missing" / "x.zst"))
    assert rc == 2 and "does not exist" in err
    rc, _, err = deploy_cli("bundle", "--image", images["app"], "-o", str(tmp_path / "x.zst"), "--for", "gpus")
    assert rc == 2 and "one host" in err
    rc, _, err = deploy_cli("bundle", "--image", images["app"], "-o", str(tmp_path / "x.zst"), "--for", "nosuchhost")
    assert rc == 2
    assert not list(tmp_path.iterdir())
