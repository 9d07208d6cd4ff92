"""`deploy prune` and `deploy rollback` on the testbed.

The host gets a staging dir of this test's own, so its history log (which says what deployer
shipped) and its leftovers are only this test's: prune never touches what other suites shipped.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from image_support import build_random, remove_image
from test_run_support import container, remove_containers, unique

from tests.integration.cli_support import deploy, inventory_with

HOST = "gpu02"  # classic store; the same logic runs on gpu01's containerd store (image ids differ only)


@pytest.fixture
def fleet(testbed: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Four versions of a fresh repository shipped to HOST, with this test's staging dir."""
    repo = f"prune-it/{uuid.uuid4().hex[:8]}"
    staging = os.path.join(testbed.hosts[HOST].data_root, "..", f"staging-{repo.split('/')[1]}")
    env = {**testbed.env(), "DEPLOY_INVENTORY": inventory_with(testbed, tmp_path, HOST,
                                                               deploy_staging_dir=os.path.realpath(staging))}
    ws = testbed.docker("ws")
    refs = [f"{repo}:v{i}" for i in range(1, 5)]
    names: list[str] = []
    try:
        for ref in refs:
            build_random(ws, ref, [4096])
            code, _, err = deploy(env, "ship", "--host", HOST, "--image", ref, "--via", "tarball", "--json")
            assert code == 0, err
        yield {"env": env, "repo": repo, "refs": refs, "names": names, "staging": os.path.realpath(staging)}
    finally:
        remove_containers(testbed, names, hosts=(HOST,))
        for ref in refs:
            remove_image(ws, ref)
            remove_image(testbed.docker(HOST), ref)
        shutil.rmtree(os.path.realpath(staging), ignore_errors=True)


def images_of(testbed: Any, repo: str) -> set[str]:
    return {t for image in testbed.docker(HOST).images.list(name=repo) for t in image.tags}


def run(env: dict[str, str], name: str, ref: str, *extra: str) -> None:
    code, _, err = deploy(env, "run", "--host", HOST, "--image", ref, "--name", name, "--gpus", "1",
                          "-e", "TOKEN=s3cret", *extra, "--", "sleep", "600")
    assert code == 0, err


def test_prune_keeps_newest_and_in_use_then_rollback(testbed: Any, fleet: dict[str, Any]) -> None:
    env, repo, (v1, v2, v3, v4) = fleet["env"], fleet["repo"], fleet["refs"]
    kept_run, pruned_run = unique("rb-keep"), unique("rb-gone")
    fleet["names"] += [kept_run, pruned_run]
    run(env, kept_run, v3)
    run(env, kept_run, v4, "--replace")  # kept_run ran v3 before v4
    run(env, pruned_run, v1)
    run(env, pruned_run, v4, "--replace")  # pruned_run ran v1 before v4
    in_use = unique("rb-use")
    fleet["names"].append(in_use)
    run(env, in_use, v2)  # v2 stays: a container uses it

    code, plan, err = deploy(env, "prune", "--host", HOST, "--keep", "2", "--dry-run", "--json")
    assert code == 0, err
    assert images_of(testbed, repo) == {v1, v2, v3, v4}  # a dry run removes nothing
    (host,) = plan
    assert [i["name"] for i in host["removed"] if i["kind"] == "image"] == [v1]
    assert host["bytes_freed"] > 0 and host["dry_run"] is True

    code, done, err = deploy(env, "prune", "--host", HOST, "--keep", "2", "--json")
    assert code == 0, err
    (host,) = done
    assert images_of(testbed, repo) == {v2, v3, v4}  # the two newest, and the one in use
    assert [i["name"] for i in host["removed"] if i["kind"] == "image"] == [v1]
    assert host["bytes_freed"] >= 4096 and host["failed"] == []
    reasons = {i["name"]: i["reason"] for i in host["kept"]}
    assert reasons[v2] == f"in use by {in_use}" and "newest 2" in reasons[v3] and "newest 2" in reasons[v4]
    code, _, err = deploy(env, "prune", "--host", HOST, "--keep", "2")
    assert code == 0 and f"{HOST}: freed" in err  # the table run reports bytes per host too

    # rollback to a kept version: same options (GPU, env, command), the earlier image
    code, _, err = deploy(env, "rollback", kept_run, "--host", HOST, "--json")
    assert code == 0, err
    c = container(testbed, HOST, kept_run)
    assert c is not None and c.labels["deployer.image"] == v3 and c.status == "running"
    assert "TOKEN=s3cret" in c.attrs["Config"]["Env"] and c.attrs["Config"]["Cmd"] == ["sleep", "600"]
    assert c.labels["deployer.gpus"] == "1" and c.attrs["HostConfig"]["DeviceRequests"][0]["Count"] == 1

    # rollback to a pruned version: refused, nothing changed
    before = container(testbed, HOST, pruned_run)
    code, _, err = deploy(env, "rollback", pruned_run, "--host", HOST)
    assert code == 1
    assert f"it ran {v1}" in err and "no longer on this host" in err and f"--image {v1}" in err
    after = container(testbed, HOST, pruned_run)
    assert before is not None and after is not None and after.id == before.id and after.status == "running"
    code, _, err = deploy(env, "rollback", pruned_run + "-never", "--host", HOST)
    assert code == 2 and "never ran" in err


def test_prune_removes_staging_leftovers_and_old_exited_containers(testbed: Any, fleet: dict[str, Any]) -> None:
    env, repo = fleet["env"], fleet["repo"]
    leftover = Path(fleet["staging"]) / "blobs" / "sha256" / ("ab" * 32 + ".zst.partial")
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(os.urandom(64 * 1024))
    copy = Path(fleet["staging"]) / "relay" / "blobs" / "sha256" / ("cd" * 32 + ".zst")  # as a failed relayed ship
    copy.parent.mkdir(parents=True, exist_ok=True)  # leaves it, its ship's key dir gone with the ship
    copy.write_bytes(os.urandom(64 * 1024))
    done_name = unique("pr-exit")
    fleet["names"].append(done_name)
    code, _, err = deploy(env, "run", "--host", HOST, "--image", fleet["refs"][0], "--name", done_name,
                          "--attach", "--", "true")
    assert code == 0, err
    time.sleep(1.5)  # --older-than 1s: the container must have exited more than a second ago (a warm
    # `deploy` starts the prune well within that second)
    code, done, err = deploy(env, "prune", "--host", HOST, "--keep", "4", "--older-than", "1s", "--json")
    assert code == 0, err
    (host,) = done
    kinds = {(i["kind"], i["name"]) for i in host["removed"]}
    assert ("container", done_name) in kinds and ("staging", "blobs") in kinds and ("staging", "relay") in kinds
    assert not leftover.exists() and not copy.exists() and container(testbed, HOST, done_name) is None
    assert images_of(testbed, repo) == set(fleet["refs"])  # --keep 4: every version stays
    assert host["bytes_freed"] >= 64 * 1024
