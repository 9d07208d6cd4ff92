"""The deploy lock against the real testbed: a dead deploy's lock is taken over, anyone else's is not.

The locks are left on the host's staging dir directly (the testbed's hosts share this machine's
filesystem), written exactly as a deploy on this or another workstation writes them.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer import lock as locks
from tests.conftest import Testbed
from tests.integration.cli_support import deploy
from tests.integration.test_ship import build, host_image_id, tag
from tests.lock_support import dead_deploy

HOST = "gpu02"  # overlay2: the lock does not depend on the store


LEFT_BY_TEST = "shiptest/lock-left-by-test:v1"  # the image a lock left here names: only those are cleaned up


@pytest.fixture
def lock_dir(testbed: Testbed) -> Iterator[Path]:
    """HOST's lock dir, which must be free before the test; a lock this test left is removed after it."""
    path = Path(testbed.hosts[HOST].staging_dir, "lock")
    assert not path.exists(), f"{path} is held: another test is shipping to {HOST}"
    try:
        yield path
    finally:
        owner = path / "owner"
        if owner.exists() and LEFT_BY_TEST in owner.read_text():
            subprocess.run(["rm", "-rf", "--", str(path)], check=False)


@pytest.fixture
def env(testbed: Testbed, tmp_path: Path) -> dict[str, str]:
    return {**testbed.env(), "DEPLOYER_CACHE_DIR": str(tmp_path / "blob-cache"), "DEPLOYER_RETRY_BUDGET": "60"}


def one(records: list[dict[str, Any]], host: str) -> dict[str, Any]:
    [rec] = [r for r in records if r["host"] == host]
    return rec


def leave(lock_dir: Path, who: locks.Owner) -> str:
    token = uuid.uuid4().hex
    lock_dir.mkdir(parents=True)
    line = json.dumps(locks.owner_record(LEFT_BY_TEST, token, who), sort_keys=True, separators=(",", ":"))
    (lock_dir / "owner").write_text(line + "\n")
    return token


def test_a_plain_ship_takes_over_the_lock_of_a_dead_deploy(testbed: Testbed, lock_dir: Path,
                                                           env: dict[str, str]) -> None:
    ref = tag("lockdead")
    image = build(testbed, ref, [1])
    leave(lock_dir, dead_deploy())
    code, out, err = deploy(env, "ship", "--host", HOST, "--via", "tarball", "--image", ref, "--json")
    assert code == 0, err
    rec = one(out, HOST)
    assert rec["ok"] and rec["verified"] and host_image_id(testbed, HOST, ref) == image.id
    assert f"{HOST}: took over the deploy lock at" in err and f"shipping {LEFT_BY_TEST}" in err
    assert "on this workstation is gone" in err
    assert not lock_dir.exists()  # ours, released at the end
    assert not list(lock_dir.parent.glob("lock.dead.*"))


def test_a_reused_pid_does_not_keep_a_dead_deploy_alive(testbed: Testbed, lock_dir: Path,
                                                        env: dict[str, str]) -> None:
    ref = tag("lockreused")
    build(testbed, ref, [1])
    me = locks.identity()
    assert me.started is not None
    # the pid of a live process (this test's), but the lock records another start time: not that deploy
    leave(lock_dir, dataclasses.replace(me, started=me.started - 1))
    code, out, err = deploy(env, "ship", "--host", HOST, "--via", "tarball", "--image", ref, "--json")
    assert code == 0, err
    assert one(out, HOST)["ok"] and f"pid {me.pid} is another process now" in err


def test_a_lock_from_another_workstation_needs_break_lock(testbed: Testbed, lock_dir: Path,
                                                          env: dict[str, str]) -> None:
    ref = tag("lockother")
    build(testbed, ref, [1])
    other = dataclasses.replace(dead_deploy(), workstation="ws-elsewhere", machine="m-elsewhere", boot="b-else")
    token = leave(lock_dir, other)
    code, out, err = deploy(env, "ship", "--host", HOST, "--via", "tarball", "--image", ref, "--json")
    assert code == 1
    rec = one(out, HOST)
    assert not rec["ok"] and "another deploy is in progress" in rec["error"] and rec["bytes_sent"] == 0
    assert "--break-lock" in err and "took over" not in err
    assert token in (lock_dir / "owner").read_text()  # untouched
    code, out, err = deploy(env, "ship", "--host", HOST, "--via", "tarball", "--image", ref, "--json",
                            "--break-lock")
    assert code == 0, err
    assert one(out, HOST)["ok"] and not lock_dir.exists()
