"""Issue 11's checks on today's Docker: hosts on the containerd image store (Docker 28), with the
workstation on whichever store DEPLOYER_TESTBED_WS_STORE names (scripts/test runs this file on both).

Every check reads the host's own Docker and content store (config digests, `docker images`), and
uplink bytes from the host's port on the site bridge.
"""
from __future__ import annotations

import io
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from deployer.local.cache import Cache
from tests.conftest import REPO, Testbed, _deploy_argv
from tests.integration.cli_support import deploy
from tests.integration.image_support import config_digest_of, scratch_image
from tests.integration.test_ship import build, one, port_tx, tag

AIR, GPU = "airgap01", "gpu01"  # both Docker 28 on the containerd image store


@pytest.fixture(scope="module")
def env(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    assert testbed.hosts[AIR].store == "containerd" and testbed.hosts[GPU].store == "containerd"
    cache = tmp_path_factory.mktemp("blob-cache")
    return {**testbed.env(), "DEPLOYER_CACHE_DIR": str(cache), "DEPLOYER_RETRY_BUDGET": "60",
            "DEPLOYER_DEAD_LINK_S": "5"}


def listed(testbed: Testbed, host: str) -> dict[str, list[str]]:
    """`docker images` of a host: id -> tags (the containerd store lists only complete images)."""
    out = testbed.ssh(host, "docker images --no-trunc --format '{{.ID}} {{.Repository}}:{{.Tag}}'").stdout
    images: dict[str, list[str]] = {}
    for line in out.decode().splitlines():
        image_id, _, name = line.partition(" ")
        images.setdefault(image_id, []).append(name)
    return images


def leftovers(testbed: Testbed, host: str) -> list[str]:
    """Stand-ins of this staging dir (other tests ship with staging dirs of their own) and dangling
    image records that a ship may have left on the host."""
    label = f"io.deployer.partial={testbed.hosts[host].staging_dir}"
    out = testbed.ssh(host, "docker images -a --no-trunc --format '{{.ID}} {{.Repository}}'; "
                            f"docker images -q --no-trunc --filter label={label}").stdout.decode()
    return [ln for ln in out.splitlines() if "moby-dangling" in ln or (ln.startswith("sha256:") and " " not in ln)]


def add_layer(testbed: Testbed, base: str, new: str, size: int) -> Any:
    """NEW = BASE plus one small random layer (a code-only change), built on the workstation."""
    dockerfile = f"FROM {base}\nRUN head -c {size} /dev/urandom > /code-{uuid.uuid4().hex[:8]}.py\n"
    client = testbed.docker("ws", timeout=300)
    image, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=new, rm=True)
    return image


def test_tarball_first_ship_reship_and_run_on_a_containerd_host(testbed: Testbed, env: dict[str, str]) -> None:
    v1 = tag("modern")
    image = build(testbed, v1, [6, 2], base="deployer-testbed/sample:latest")
    code, out, err = deploy(env, "ship", "--host", AIR, "--image", v1, "--json")
    assert code == 0, err
    rec = one(out, AIR)
    assert rec["ok"] and rec["verified"] and rec["via"] == "tarball" and rec["config_digest"] == image.id
    assert config_digest_of(testbed.docker(AIR), v1) == image.id
    host_id = rec["host_image_id"]
    assert v1 in listed(testbed, AIR).get(host_id, []), "the image is not complete in the host's store"

    # a code-only change: only the new layer crosses the uplink
    v2 = tag("modern")
    new = add_layer(testbed, v1, v2, 300_000)
    changed = new.attrs["RootFS"]["Layers"][-1]
    before = port_tx(AIR)
    code, out, err = deploy(env, "ship", "--host", AIR, "--image", v2, "--json")
    assert code == 0, err
    sent = port_tx(AIR) - before
    rec = one(out, AIR)
    assert rec["ok"] and rec["verified"] and rec["layers_sent"] == 1
    blob = Cache(env["DEPLOYER_CACHE_DIR"]).lookup(changed, "zstd", 3)
    assert blob is not None
    print(f"re-ship: {sent} B on the host's link for a {blob.size} B compressed layer")
    assert sent <= 1.1 * blob.size + 1_000_000
    assert config_digest_of(testbed.docker(AIR), v2) == config_digest_of(testbed.docker("ws"), v2)
    assert v2 in listed(testbed, AIR).get(rec["host_image_id"], [])
    # the same ship again is a verified no-op
    code, out, err = deploy(env, "ship", "--host", AIR, "--image", v2, "--json")
    assert code == 0 and one(out, AIR)["layers_sent"] == 0 and one(out, AIR)["bytes_sent"] == 0, err

    # and it runs, on the host's (fake) GPUs
    name = f"modern-{uuid.uuid4().hex[:6]}"
    code, out, err = deploy(env, "run", "--host", AIR, "--image", v2, "--name", name, "--gpus", "all",
                            "--attach", "--", "env")
    assert code == 0, err
    assert "NVIDIA_VISIBLE_DEVICES=all" in (out if isinstance(out, str) else str(out)) + err
    assert leftovers(testbed, AIR) == []


def test_registry_ship_to_a_containerd_host_is_verified(testbed: Testbed, env: dict[str, str]) -> None:
    ref = tag("modern-reg")
    scratch_image(testbed.docker("ws", timeout=300), ref, 2_000_000)
    code, out, err = deploy(env, "ship", "--host", GPU, "--via", "registry", "--image", ref, "--json")
    assert code == 0, err
    rec = one(out, GPU)
    assert rec["ok"] and rec["verified"] and rec["via"] == "registry"
    assert config_digest_of(testbed.docker(GPU), ref) == config_digest_of(testbed.docker("ws"), ref)
    assert ref in listed(testbed, GPU).get(rec["host_image_id"], [])
    # REF there names the manifest the ship pushed: the same ship again finds the image there
    # (no push, no pull), as it does after a tarball ship
    code, out, err = deploy(env, "ship", "--host", GPU, "--via", "registry", "--image", ref, "--json")
    assert code == 0, err
    again = one(out, GPU)
    assert again["ok"] and again["verified"] and again["via"] is None, again
    assert "host already has the image" in err
    assert again["host_image_id"] == rec["host_image_id"] and again["bytes_sent"] == 0


def base_then_child(testbed: Testbed, env: dict[str, str], first: str,
                    then: str) -> tuple[dict[str, Any], str, str]:
    """Ship a fresh base to GPU by route FIRST, then a child of it by route THEN; the child must end
    complete and verified there, with no leftovers. Returns the child's record, stderr and ref."""
    base = tag("modern-base")
    build(testbed, base, [1])
    code, _, err = deploy(env, "ship", "--host", GPU, "--via", first, "--image", base, "--json")
    assert code == 0, err
    child = tag("modern-child")
    add_layer(testbed, base, child, 200_000)
    code, out, err = deploy(env, "ship", "--host", GPU, "--via", then, "--image", child, "--json")
    assert code == 0, err
    rec = one(out, GPU)
    assert rec["ok"] and rec["verified"]
    assert config_digest_of(testbed.docker(GPU), child) == config_digest_of(testbed.docker("ws"), child)
    assert child in listed(testbed, GPU).get(rec["host_image_id"], [])
    assert leftovers(testbed, GPU) == []
    return rec, err, child


def test_an_incomplete_pull_is_completed_as_a_tarball(testbed: Testbed, env: dict[str, str]) -> None:
    """Docker 28's containerd store does not download a layer it has unpacked from another source
    (moby#49784): the pull leaves an image that runs but is incomplete. deployer notices, and sends
    the image as a tarball instead, which ends complete and verified."""
    rec, err, _ = base_then_child(testbed, env, "tarball", "registry")
    if rec["via"] == "tarball":  # a Docker with moby#53615 pulls what it lacks: then no fallback
        assert "moby#49784" in err and "sending the image as a tarball instead" in err


def test_after_an_incomplete_pull_the_next_ship_sends_its_layers_at_once(testbed: Testbed, env: dict[str, str],
                                                                         tmp_path: Path) -> None:
    """After a pull came out incomplete (moby#49784), auto sends the next image with those layers
    present (a re-ship after a code change) as a tarball at once: no pull that would come out
    incomplete again, no push, its new layer sent once."""
    env = {**env, "XDG_CACHE_HOME": str(tmp_path / "cache")}  # what this test's ships remember, only
    rec, _, child = base_then_child(testbed, env, "tarball", "registry")
    then = tag("modern-next")
    add_layer(testbed, child, then, 300_000)
    code, out, err = deploy(env, "ship", "--host", GPU, "--via", "auto", "--image", then, "--json")
    assert code == 0, err
    nxt = one(out, GPU)
    assert nxt["ok"] and nxt["verified"]
    assert config_digest_of(testbed.docker(GPU), then) == config_digest_of(testbed.docker("ws"), then)
    if rec["via"] == "tarball":  # the child's pull came out incomplete
        assert nxt["via"] == "tarball" and nxt["layers_sent"] == 1 and nxt["bytes_sent"] < 600_000, nxt
        assert "left an incomplete image (moby#49784" in err and "sending the image as a tarball instead" not in err
    else:  # a Docker with moby#53615 pulls what it lacks: it keeps pulling
        assert nxt["via"] == "registry"


def test_layers_pulled_from_a_registry_are_completed_by_a_tarball_ship(testbed: Testbed,
                                                                       env: dict[str, str]) -> None:
    """A registry pull keeps layers compressed under the registry's digests: the pull recorded which
    blob holds each layer, so the tarball ship's OCI load names them by those and sends only the
    child's own layer; the image ends up complete."""
    rec, _, _ = base_then_child(testbed, env, "registry", "tarball")
    assert rec["via"] == "tarball"
    assert rec["layers_sent"] == 1 and rec["bytes_sent"] < 400_000, rec


def test_killed_ship_to_a_containerd_host_resumes_on_a_plain_rerun(testbed: Testbed, env: dict[str, str]) -> None:
    ref = tag("modern-kill")
    image = build(testbed, ref, [10, 10, 10])
    blobs = Path(testbed.hosts[AIR].staging_dir, "blobs", "sha256")
    before = {p for p in blobs.glob("*") if p.is_file()}  # other tests' kept blobs stay
    testbed.throttle(AIR, "40mbit")
    try:
        proc = subprocess.Popen([*_deploy_argv(), "ship", "--host", AIR, "--image", ref], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, cwd=str(REPO))
        deadline = time.monotonic() + 90
        staged = 0
        while staged < 14_000_000 and time.monotonic() < deadline and proc.poll() is None:
            staged = sum(p.stat().st_size for p in blobs.glob("*") if p.is_file() and p not in before)
            time.sleep(0.05)
        os.kill(proc.pid, 9)
        proc.wait()
        assert staged >= 14_000_000, "the transfer never got going"
    finally:
        testbed.throttle(AIR, None)
    code, out, err = deploy(env, "ship", "--host", AIR, "--image", ref, "--json")  # plain: no --break-lock
    assert code == 0, err
    rec = one(out, AIR)
    assert rec["ok"] and rec["verified"] and config_digest_of(testbed.docker(AIR), ref) == image.id
    assert rec["bytes_sent"] < 30_000_000, "the re-run sent everything again"
    assert ref in listed(testbed, AIR).get(rec["host_image_id"], [])
    assert leftovers(testbed, AIR) == []
    assert {p for p in blobs.glob("*") if p.is_file()} <= before, "staged blobs were left behind"
