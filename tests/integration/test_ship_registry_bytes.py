"""`deploy ship --via registry`: bytes_sent is the compressed bytes this push put on the wire.

The image is the testbed sample plus one fresh, compressible layer, so at least one layer must
travel while the sample's own layers may already sit in the registry (mounted, not sent). Which
blobs this push must have uploaded is read from the registry's storage before and after, and their
raw size from the blobs themselves: both independent of the push stream deployer reads. The
uplink's byte counter shows the reported bytes really crossed.
"""
from __future__ import annotations

import gzip
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import DeployRunner, Testbed
from tests.integration.image_support import (
    MANIFEST_ACCEPT,
    config_digest_of,
    forget_shipped,
    pushed_layers_match,
    pushed_manifest,
    registry_blobs,
)

SAMPLE = "deployer-testbed/sample:latest"
# Classic-store hosts: on the containerd store (gpu01) a pull of layers the host already unpacked
# from another source is incomplete on Docker 28 (moby#49784) and deployer then switches that
# host to the tarball route (tests/integration/test_modern_docker.py); this test is about what a
# registry push costs, so its hosts pull the image whole.
HOSTS = ("gpu02", "cpu01")


def registry_get(testbed: Testbed, repo: str, what: str, accept: str | None = None) -> requests.Response:
    res = requests.get(f"http://{testbed.registry}/v2/{repo}/{what}", timeout=30,
                       headers={"Accept": accept} if accept else {})
    res.raise_for_status()
    return res


@pytest.fixture
def fresh_image(testbed: Testbed) -> Any:
    """SAMPLE + a unique ~2.7 MB layer of text (gzip takes it to about a third)."""
    client = testbed.docker("ws", timeout=300)
    tag = f"gaps-{uuid.uuid4().hex[:10]}/sample:1"
    dockerfile = f"FROM {SAMPLE}\nRUN seq 1 400000 > /numbers && echo {uuid.uuid4().hex} >> /numbers\n"
    image, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    try:
        yield image, tag
    finally:
        forget_shipped(testbed, tag, HOSTS)


def test_bytes_sent_is_the_compressed_size_of_the_uploaded_layers(testbed: Testbed, deploy_cli: DeployRunner,
                                                                   fresh_image: Any) -> None:
    image, tag = fresh_image
    before = registry_blobs(Path(testbed.paths.registry))
    tx_before = testbed.uplink_bytes()[0]
    # --lock-wait: another ship to these hosts (a parallel test run) must not fail this one
    code, out, err = deploy_cli("ship", "--host", ",".join(HOSTS), "--image", tag, "--via", "registry", "--json",
                                "--lock-wait", "90", timeout=180)
    tx = testbed.uplink_bytes()[0] - tx_before  # workstation -> fleet, including anything else running
    assert code == 0, err
    records = {r["host"]: r for r in json.loads(out)}
    assert all(records[h]["ok"] and records[h]["via"] == "registry" and records[h]["verified"] for h in HOSTS)
    config = config_digest_of(testbed.docker("ws"), tag)
    assert all(records[h]["image_id"] == image.id and records[h]["config_digest"] == config for h in HOSTS)

    repo, _, ref_tag = tag.rpartition(":")
    manifest = pushed_manifest(lambda ref: registry_get(testbed, repo, f"manifests/{ref}", MANIFEST_ACCEPT).json(),
                               ref_tag, config)
    assert manifest["config"]["digest"] == config
    uploaded = [layer for layer in manifest["layers"] if layer["digest"] not in before]
    assert uploaded, "the fresh layer should have been uploaded by this push"
    compressed = sum(layer["size"] for layer in uploaded)
    raw = 0
    for layer in uploaded:
        blob = registry_get(testbed, repo, f"blobs/{layer['digest']}").content
        assert len(blob) == layer["size"]
        raw += len(gzip.decompress(blob))

    # one host pushed and is charged the upload; the other reused that push
    sent = sorted(records[h]["bytes_sent"] for h in HOSTS)
    assert sent[0] == 0, records
    assert pushed_layers_match(sent[1], manifest["layers"], before), (sent, manifest, before)
    # what was charged counts layers compressed, never raw (on an empty registry the uploaded
    # layers include busybox's, which compresses only to about half)
    assert raw > 2_600_000 and compressed < 0.75 * raw and sent[1] < raw, (sent, compressed, raw)
    assert tx >= 0.97 * sent[1], (tx, sent)  # what we report did cross the uplink
