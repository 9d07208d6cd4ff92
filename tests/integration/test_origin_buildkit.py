"""Origin pull (issue 19) of a base the build declared, on the testbed: the base is pushed to the testbed's
registry (playing its public origin) and is then gone from the workstation's image store; `deploy build`
builds the app FROM it with BuildKit, whose provenance names the base and the digest it resolved. A host
that reaches the registry pulls the base there, pinned by digest, and gets only the app's layers over SSH;
an air-gapped host gets everything over SSH. Run once per workstation image store."""
from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Testbed
from tests.integration.cli_support import deploy
from tests.integration.image_support import config_digest_of, remove_image
from tests.integration.test_origin import _base_rootfs

BASE_BYTES = 4_000_000  # random: it compresses to about as much
APP_BYTES = 1_000_000
HOSTS = ("gpu02", "gpu01", "airgap01")  # classic store, containerd store, no route to the registry


@dataclass(frozen=True)
class Built:
    repo: str  # the base's repository in the registry
    pinned: str  # repo@sha256 of its manifest, as the push named it
    app: str  # what deploy build made
    app_config: str
    env: dict[str, str]


@pytest.fixture
def built(testbed: Testbed, tmp_path: Path) -> Iterator[Built]:
    ws = testbed.docker("ws", timeout=300)
    u = uuid.uuid4().hex[:10]
    repo, name = f"{testbed.registry}/originbk-{u}/base", f"originbk-{u}"
    ws.api.import_image_from_data(_base_rootfs(ws, random.randbytes(BASE_BYTES)), repository=repo, tag="1")
    for line in ws.images.push(repo, tag="1", stream=True, decode=True):
        assert "error" not in line, line
    [pinned] = ws.images.get(f"{repo}:1").attrs["RepoDigests"]
    remove_image(ws, f"{repo}:1")  # from now on only the registry has the base
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text(
        f"FROM {repo}:1\nRUN echo {uuid.uuid4().hex} > /app-id\nRUN head -c {APP_BYTES} /dev/urandom > /app-data\n")
    (tmp_path / "playbooks").mkdir()
    playbook = tmp_path / "playbooks" / "app.yml"
    playbook.write_text(f"name: {name}\nhosts: gpu02\nimage:\n  build: {{context: ../app}}\n")
    env = {**testbed.env(), "XDG_CACHE_HOME": str(tmp_path / "cache"), "DEPLOYER_CACHE_DIR": str(tmp_path / "blobs")}
    env.pop("DEPLOY_PLAYBOOK", None)
    code, out, err = deploy(env, "build", "-p", str(playbook), "--json", timeout=300)
    assert code == 0, err
    app = out["ref"]
    config = config_digest_of(ws, app)
    assert config is not None
    try:
        yield Built(repo, pinned, app, config, env)
    finally:
        for host in ("ws", *HOSTS):
            client = testbed.docker(host)
            for ref in (app, f"{name}:latest", f"{repo}:1", pinned):
                remove_image(client, ref)


def test_a_declared_base_is_pulled_by_the_hosts_that_reach_its_registry(testbed: Testbed, built: Built) -> None:
    ws = testbed.docker("ws")
    held = [d for image in ws.images.list(all=True) for d in image.attrs.get("RepoDigests") or ()]
    assert not any(d.startswith(f"{built.repo}@") for d in held)  # no pulled base for deploy to find
    record = json.loads((Path(built.env["XDG_CACHE_HOME"]) / "deployer" / "bases.json").read_text())
    assert [m["name"] for m in record[built.app_config]["materials"]] == [built.repo]

    code, out, err = deploy(built.env, "ship", "--host", ",".join(HOSTS), "--image", built.app, "--via", "tarball",
                            "--json", "--lock-wait", "120", timeout=300)
    assert code == 0, err
    recs = {r["host"]: r for r in out}
    for host in ("gpu02", "gpu01"):  # both image stores
        rec = recs[host]
        assert rec["ok"] and rec["verified"] and rec["origin"] == built.pinned, rec  # by digest, never the tag
        assert rec["layers_from_origin"] == 1 and rec["layers_sent"] == 2
        assert rec["bytes_sent"] <= 1.1 * APP_BYTES + 1_000_000, rec
        assert config_digest_of(testbed.docker(host), built.app) == built.app_config
    air = recs["airgap01"]  # never asked to pull: everything over SSH
    assert air["ok"] and air["verified"] and air["origin"] is None and air["layers_from_origin"] == 0
    assert air["layers_sent"] == 3 and air["bytes_sent"] >= BASE_BYTES
    assert config_digest_of(testbed.docker("airgap01"), built.app) == built.app_config
    # the registry's answer is remembered: the next ship asks it nothing before probing its hosts
    assert json.loads((Path(built.env["XDG_CACHE_HOME"]) / "deployer" / "bases.json").read_text())[
        built.app_config]["base"]["ref"] == built.pinned
