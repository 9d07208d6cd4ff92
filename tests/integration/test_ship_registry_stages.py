"""`deploy ship --via registry` of a big image pushes stage images ahead of it (deployer.local.stages):
the hosts pull its lower layers while the upper ones are still being pushed, and nothing of the
stages is left behind, on the workstation, the hosts or in the registry's tags but one.

Stages need a classic-store workstation (the containerd store's would need an OCI layout of its own):
on the containerd-workstation lane the same ship pushes the image alone.
"""
from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import DeployRunner, Testbed
from tests.integration.image_support import MANIFEST_ACCEPT, config_digest_of, forget_shipped

HOSTS = ("gpu01", "gpu02")  # the containerd and the classic image store
LAYER_MB = 70  # three of them: two stages (70 MB, 140 MB), then the image


@pytest.fixture
def big_image(testbed: Testbed) -> Iterator[str]:
    client = testbed.docker("ws", timeout=300)
    tag = f"stages-{uuid.uuid4().hex[:10]}/ml:1"
    lines = ["FROM deployer-testbed/busybox:latest"]
    lines += [f"RUN head -c {LAYER_MB * 1_000_000} /dev/urandom > /weights{i}" for i in range(3)]
    client.images.build(fileobj=io.BytesIO("\n".join(lines).encode()), tag=tag, rm=True)
    try:
        yield tag
    finally:
        forget_shipped(testbed, tag, HOSTS)


def _stage_images(client: Any) -> list[str]:
    return [i.id for i in client.images.list(all=True, filters={"label": "io.deployer.stage"})]


def test_hosts_pull_the_stages_while_the_rest_is_pushed(testbed: Testbed, deploy_cli: DeployRunner,
                                                        big_image: str) -> None:
    tag = big_image
    code, out, err = deploy_cli("-v", "ship", "--host", ",".join(HOSTS), "--image", tag, "--via", "registry", "--json",
                                "--lock-wait", "90", timeout=300)
    assert code == 0, err
    records = {r["host"]: r for r in json.loads(out)}
    config = config_digest_of(testbed.docker("ws"), tag)
    for host in HOSTS:
        rec = records[host]
        assert rec["ok"] and rec["via"] == "registry" and rec["verified"], rec
        assert config_digest_of(testbed.docker(host), tag) == config
        assert rec["layers_sent"] >= 3  # the stages' pulls count too
        assert _stage_images(testbed.docker(host)) == []  # the image's pull removed them
    assert _stage_images(testbed.docker("ws")) == []
    if testbed.docker("ws").info().get("Driver") != "overlay2":
        # a containerd-store workstation pushes the image alone (a stage would need an OCI layout)
        assert not re.search(r"pushing stage \d", err) and "pulled stage" not in err, err
        return

    # the stages went up one after the other, then the image; each host pulled both, or (the
    # push being over once it had pulled the first) left the second to the image's pull
    assert len(re.findall(r"pushing stage \d/2 of ", err)) == 2 and "itself, after 2 stage(s)" in err, err
    repo = tag.rpartition(":")[0]
    pushed = err.index(f"deployer.ship.blobpush pushed {repo}:1 ")  # these hosts read zstd: deployer's own push
    for host in HOSTS:
        pulled = re.findall(rf"{host}: pulled stage (\d)", err)
        assert pulled in (["1", "2"], ["1"]), err
        if pulled == ["1"]:
            assert err.index(f"{host}: pulled stage 1") > pushed, err
    # the registry keeps one tag for the stages (the last one: the image's first three layers)
    stage = requests.get(f"http://{testbed.registry}/v2/{repo}/manifests/deployer-stage", timeout=30,
                         headers={"Accept": MANIFEST_ACCEPT}).json()
    assert len(stage["layers"]) == 3  # busybox + two of the three big layers

    # an image built on it pushes its new layer alone: its lower layers were pushed, so no stage
    child = f"{repo}:2"
    client = testbed.docker("ws", timeout=300)
    client.images.build(fileobj=io.BytesIO(f"FROM {tag}\nRUN echo {uuid.uuid4().hex} > /code".encode()), tag=child,
                        rm=True)
    try:
        code, out, err = deploy_cli("-v", "ship", "--host", "gpu02", "--image", child, "--via", "registry", "--json",
                                    "--lock-wait", "90", timeout=300)
        assert code == 0 and json.loads(out)[0]["verified"], err
        assert not re.search(r"pushing stage \d", err) and "itself, after" not in err, err
    finally:
        forget_shipped(testbed, child, ["gpu02"])
