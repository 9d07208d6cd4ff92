"""Origin pull (issue 19) on the testbed: the testbed's registry plays the public origin of a base
image. A host that reaches it pulls the base there and only the app's layers go over SSH; an
air-gapped host gets everything over SSH; a pull that fails falls back to sending the base.

Each test makes a base only it has (busybox's files plus a unique random file, imported as one
layer, then pushed: the push gives it a repo digest, as a pull would), so no host holds its layer.
"""
from __future__ import annotations

import io
import json
import signal
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, Testbed, _deploy_argv
from tests.integration.cli_support import deploy
from tests.integration.image_support import config_digest_of, remove_image

BUSYBOX = "deployer-testbed/busybox:latest"
BASE_BYTES = 4_000_000  # random: it compresses to about as much
APP_BYTES = 1_000_000
HOSTS = ("gpu02", "gpu01", "airgap01")  # classic store, containerd store, no route to the registry


@dataclass(frozen=True)
class Pair:
    base: str  # the pushed base, by tag
    repo_digest: str  # ... pinned
    app: str
    app_config: str  # the app's config digest: what verification compares on any store


def _base_rootfs(ws: object, marker: bytes) -> bytes:
    """busybox's filesystem as one tar, with a unique random file added."""
    container = ws.containers.create(BUSYBOX, command=["true"])  # type: ignore[attr-defined]
    try:
        flat = b"".join(container.export())
    finally:
        container.remove(force=True)
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(flat)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo(f"base-{uuid.uuid4().hex}")
        info.size = len(marker)
        dst.addfile(info, io.BytesIO(marker))
    return out.getvalue()


@pytest.fixture
def pair(testbed: Testbed) -> Iterator[Pair]:
    ws = testbed.docker("ws", timeout=300)
    u = uuid.uuid4().hex[:10]
    repo, tag = f"{testbed.registry}/origintest-{u}/base", "1"
    import random

    ws.api.import_image_from_data(_base_rootfs(ws, random.randbytes(BASE_BYTES)), repository=repo, tag=tag)
    for line in ws.images.push(repo, tag=tag, stream=True, decode=True):
        assert "error" not in line, line
    [repo_digest] = ws.images.get(f"{repo}:{tag}").attrs["RepoDigests"]
    app = f"origintest-{u}/app:1"
    dockerfile = (f"FROM {repo}:{tag}\nRUN echo {uuid.uuid4().hex} > /app-id\n"
                  f"RUN head -c {APP_BYTES} /dev/urandom > /app-data\n")
    ws.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=app, rm=True)
    config = config_digest_of(ws, app)
    assert config is not None
    try:
        yield Pair(f"{repo}:{tag}", repo_digest, app, config)
    finally:
        for host in ("ws", *HOSTS):
            client = testbed.docker(host)
            for ref in (app, f"{repo}:{tag}", repo_digest):
                remove_image(client, ref)


def test_hosts_that_reach_the_origin_pull_the_base_and_get_only_the_app_layers(
        testbed: Testbed, pair: Pair) -> None:
    code, out, err = deploy(testbed.env(), "ship", "--host", ",".join(HOSTS), "--image", pair.app,
                            "--via", "tarball", "--json", "--lock-wait", "120", timeout=300)
    assert code == 0, err
    recs = {r["host"]: r for r in out}
    for host in ("gpu02", "gpu01"):  # both image stores
        rec = recs[host]
        assert rec["ok"] and rec["verified"] and rec["origin"] == pair.repo_digest, rec
        assert rec["layers_from_origin"] == 1 and rec["layers_sent"] == 2
        # the target: at most 1.1x the app's own layers (incompressible here) + 1 MB
        assert rec["bytes_sent"] <= 1.1 * APP_BYTES + 1_000_000, rec
        assert config_digest_of(testbed.docker(host), pair.app) == pair.app_config
    air = recs["airgap01"]  # never asked to pull: everything over SSH, as before
    assert air["ok"] and air["verified"] and air["origin"] is None and air["layers_from_origin"] == 0
    assert air["layers_sent"] == 3 and air["bytes_sent"] >= BASE_BYTES
    assert config_digest_of(testbed.docker("airgap01"), pair.app) == pair.app_config


def test_the_dry_run_says_which_layers_come_from_the_origin(testbed: Testbed, pair: Pair) -> None:
    code, out, err = deploy(testbed.env(), "ship", "--host", "gpu02,airgap01", "--image", pair.app,
                            "--via", "tarball", "--dry-run", "--json")
    assert code == 0, err
    recs = {r["host"]: r for r in out}
    assert recs["gpu02"]["layers_missing"] == [2, 3] and recs["gpu02"]["origin"] == pair.repo_digest
    assert recs["gpu02"]["layers_from_origin"] == [1]
    assert any(pair.repo_digest in c and " pull " in c for c in recs["gpu02"]["commands"])
    assert recs["airgap01"]["layers_missing"] == [1, 2, 3] and recs["airgap01"]["origin"] is None
    assert "cannot reach" in recs["airgap01"]["reason"]


def test_a_pull_that_fails_falls_back_to_sending_the_base(testbed: Testbed, pair: Pair) -> None:
    """The registry still answers and lists the base, but no longer has its layer (as when it is
    down mid-plan, the pull fails): the ship sends the base layers instead and ends verified."""
    name, digest = pair.repo_digest.split("@")
    path = name.removeprefix(f"{testbed.registry}/")
    manifest = requests.get(f"http://{testbed.registry}/v2/{path}/manifests/{digest}", timeout=30, headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"})
    assert manifest.ok, manifest.text
    [layer] = manifest.json()["layers"]
    res = requests.delete(f"http://{testbed.registry}/v2/{path}/blobs/{layer['digest']}", timeout=30)
    assert res.status_code == 202, res.text
    code, out, err = deploy(testbed.env(), "ship", "--host", "gpu02", "--image", pair.app, "--via", "tarball",
                            "--json", "--lock-wait", "120", timeout=300)
    assert code == 0, err
    [rec] = out
    assert rec["ok"] and rec["verified"] and rec["origin"] is None and rec["layers_from_origin"] == 0
    assert rec["layers_sent"] == 3 and rec["bytes_sent"] >= BASE_BYTES
    assert "sending the base layers instead" in err
    assert config_digest_of(testbed.docker("gpu02"), pair.app) == pair.app_config


def test_a_base_built_here_is_sent_without_asking_any_host_to_pull_it(testbed: Testbed) -> None:
    """A base imported (or built) on the workstation and tagged for a registry the hosts reach, but
    never pushed there: on the containerd image store it has a repo digest like a pulled image, so the
    workstation asks that registry before any host is told to pull it; every host gets it over SSH."""
    ws = testbed.docker("ws", timeout=300)
    u = uuid.uuid4().hex[:10]
    base, app = f"{testbed.registry}/origintest-{u}/local-base:1", f"origintest-{u}/local-app:1"
    repo, tag = base.rsplit(":", 1)
    import random

    ws.api.import_image_from_data(_base_rootfs(ws, random.randbytes(BASE_BYTES)), repository=repo, tag=tag)
    ws.images.build(fileobj=io.BytesIO(f"FROM {base}\nRUN head -c {APP_BYTES} /dev/urandom > /app-data\n".encode()),
                    tag=app, rm=True)
    config = config_digest_of(ws, app)
    try:
        code, out, err = deploy(testbed.env(), "-v", "ship", "--host", "gpu02,gpu01", "--image", app,
                                "--via", "tarball", "--json", "--lock-wait", "120", timeout=300)
        assert code == 0, err
        for rec in out:
            assert rec["ok"] and rec["verified"] and rec["origin"] is None and rec["layers_from_origin"] == 0, rec
            assert rec["layers_sent"] == 2 and rec["bytes_sent"] >= BASE_BYTES, rec
            assert config_digest_of(testbed.docker(rec["host"]), app) == config
        assert "pulling the base" not in err and "sending the base layers instead" not in err, err
        if testbed.ws_store == "containerd":
            assert "did not show that it holds" in err, err
    finally:
        for host in ("ws", "gpu02", "gpu01"):
            for ref in (app, base):
                remove_image(testbed.docker(host), ref)


def test_origin_pull_never(testbed: Testbed, pair: Pair) -> None:
    code, out, err = deploy(testbed.env(), "ship", "--host", "gpu02", "--image", pair.app, "--via", "tarball",
                            "--origin-pull", "never", "--json", "--lock-wait", "120", timeout=300)
    assert code == 0, err
    [rec] = out
    assert rec["ok"] and rec["verified"] and rec["origin"] is None and rec["bytes_sent"] >= BASE_BYTES


def test_ctrl_c_stops_a_host_that_waits_for_its_base_to_be_pulled(testbed: Testbed, pair: Pair) -> None:
    """The app's layers are in and the host is still pulling the base (a large public one, a slow
    link, a registry that hangs) when Ctrl-C comes: the wait ends within seconds, not with the
    pull, and the lock goes."""
    staging = Path(testbed.hosts["gpu02"].staging_dir)
    staged_before = set((staging / "blobs").glob("*/*"))
    testbed.throttle("gpu02", "2mbit")  # the 4 MB base takes ~16 s to pull
    proc = subprocess.Popen([*_deploy_argv(), "ship", "--host", "gpu02", "--image", pair.app, "--via", "tarball"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=testbed.env(),
                            cwd=str(REPO), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    lines: list[str] = []
    planned, waiting = threading.Event(), threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("gpu02: planned"):
                planned.set()
            if line.startswith("gpu02: pulling the base"):
                waiting.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert planned.wait(60), "".join(lines)
        # the pull began, or is about to: it gets no further until Ctrl-C has been handled (on a
        # loaded machine, a pull sharing the link with the app's layers was seen to end with them)
        with testbed.stalled("registry"):
            assert waiting.wait(60), "".join(lines)
            time.sleep(0.5)
            pressed = time.monotonic()
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
            stopped_in = time.monotonic() - pressed
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        testbed.throttle("gpu02", None)
    err = "".join(lines)
    print(f"stopped {stopped_in:.2f} s after Ctrl-C")
    assert proc.returncode == 130 and "gpu02: failed: interrupted (Ctrl-C)" in err, err
    assert stopped_in < 8, err  # the pull had ~10 s to go
    assert not (staging / "lock").exists()
    last = [json.loads(line) for line in (staging / "history.jsonl").read_text().splitlines()][-1]
    assert last["image"] == pair.app and last["result"] == "failed" and "interrupted" in last["error"]
    # the next plain ship finishes the job: the app's blobs staged before Ctrl-C are not sent again
    code, out, err = deploy(testbed.env(), "ship", "--host", "gpu02", "--image", pair.app, "--via", "tarball",
                            "--json", timeout=300)
    assert code == 0, err
    [rec] = out
    assert rec["ok"] and rec["verified"] and rec["bytes_sent"] < APP_BYTES / 2, rec
    assert config_digest_of(testbed.docker("gpu02"), pair.app) == pair.app_config
    assert set((staging / "blobs").glob("*/*")) <= staged_before, "this ship's staged blobs were left behind"
