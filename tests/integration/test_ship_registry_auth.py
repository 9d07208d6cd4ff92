"""`deploy ship --via registry` to a registry that wants a login (issue 4, the testbed's registry-auth).

The workstation pushes with the credentials of its Docker config (a private DOCKER_CONFIG given to
`deploy` through the environment) and reads the pushed manifest back with them; the host pulls with
its own `docker login`. Meanwhile every command line on this machine (so every remote command too:
the hosts are namespaces here) is watched for the password, and the -v output, the testbed's logs
and the host's history are checked for it afterwards.
"""
from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Testbed
from tests.integration.cli_support import deploy, inventory_with
from tests.integration.image_support import (
    MANIFEST_ACCEPT,
    config_digest_of,
    pushed_layers_match,
    pushed_manifest,
    registry_blobs,
    remove_image,
    scratch_image,
)

HOST = "gpu01"


def secrets(testbed: Testbed) -> list[str]:
    """The password, and the base64 `auth` form it takes in a Docker config."""
    user, password = testbed.registry_login()
    return [password, base64.b64encode(f"{user}:{password}".encode()).decode()]


class CmdlineWatch(threading.Thread):
    """Samples every process's command line on this machine until stopped: which carry a secret, and
    which pulled from the registry (proof the watch saw the host's remote commands)."""

    def __init__(self, needles: list[str], registry: str) -> None:
        super().__init__(daemon=True)
        self.needles = [n.encode() for n in needles]
        self.registry = registry.encode()
        self.leaks: set[str] = set()
        self.pulls: set[str] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.005):
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if any(n in cmdline for n in self.needles):
                    self.leaks.add(cmdline.replace(b"\0", b" ").decode(errors="replace"))
                if self.registry in cmdline and b"pull" in cmdline:
                    self.pulls.add(cmdline.replace(b"\0", b" ").decode(errors="replace"))

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


@pytest.fixture
def host_login(testbed: Testbed) -> Iterator[None]:
    """gpu01 logged in to registry-auth the way an operator does it (password on stdin, stored in the
    host's own Docker config); logged out afterwards so no other test inherits it."""
    user, password = testbed.registry_login()
    res = testbed.ssh(HOST, f"docker login -u {user} --password-stdin {testbed.registry_auth}",
                      input=password.encode())
    assert res.returncode == 0, res.stderr.decode()
    try:
        yield
    finally:
        testbed.ssh(HOST, f"docker logout {testbed.registry_auth}")
        config = testbed.docker_config(HOST) / "config.json"
        assert testbed.registry_auth not in (config.read_text() if config.exists() else "")


@pytest.fixture
def auth_env(testbed: Testbed, tmp_path: Path) -> dict[str, str]:
    """`deploy` env: gpu01 ships through registry-auth; DOCKER_CONFIG holds the workstation's login."""
    user, password = testbed.registry_login()
    config = tmp_path / "docker-config"
    config.mkdir(mode=0o700)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {testbed.registry_auth: {"auth": auth}}}))
    return {**testbed.env(), "DOCKER_CONFIG": str(config), "DEPLOYER_CACHE_DIR": str(tmp_path / "cache"),
            "DEPLOY_INVENTORY": inventory_with(testbed, tmp_path, HOST, deploy_registry=testbed.registry_auth)}


@pytest.fixture
def fresh_image(testbed: Testbed) -> Iterator[tuple[Any, str]]:
    """A small image of one fresh layer, so gpu01 lacks it and the push has something to upload; FROM
    scratch, so the pull is complete whatever gpu01 holds (Docker 28's containerd store skips a
    layer it has from a load: moby#49784, which test_modern_docker covers)."""
    client = testbed.docker("ws", timeout=300)
    tag = f"regauth-{uuid.uuid4().hex[:10]}/app:1"
    image = scratch_image(client, tag, 300_000)
    try:
        yield image, tag
    finally:
        for name in ("ws", HOST):
            remove_image(testbed.docker(name), tag)
            remove_image(testbed.docker(name), f"{testbed.registry_auth}/{tag}")


def host_image_id(testbed: Testbed, ref: str) -> str | None:
    """The config digest of the image REF names on the host (the same image on any store)."""
    return config_digest_of(testbed.docker(HOST), ref)


def test_the_registry_wants_the_login(testbed: Testbed) -> None:
    url = f"http://{testbed.registry_auth}/v2/"
    anonymous = requests.get(url, timeout=10)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    assert requests.get(url, auth=testbed.registry_login(), timeout=10).status_code == 200
    creds = testbed.paths.registry_auth / "credentials.json"
    assert creds.stat().st_mode & 0o777 == 0o600


def test_ship_through_a_registry_with_a_login(testbed: Testbed, auth_env: dict[str, str], host_login: None,
                                              fresh_image: tuple[Any, str]) -> None:
    image, tag = fresh_image
    before = registry_blobs(testbed.paths.registry_auth)
    watch = CmdlineWatch(secrets(testbed), testbed.registry_auth)
    watch.start()
    try:
        code, out, err = deploy(auth_env, "-v", "ship", "--host", HOST, "--via", "registry", "--image", tag,
                                "--json", "--lock-wait", "120")
    finally:
        watch.stop()
    assert code == 0, err
    [rec] = [r for r in out if r["host"] == HOST]
    config = config_digest_of(testbed.docker("ws"), tag)
    assert rec["ok"] and rec["via"] == "registry" and rec["image_id"] == image.id and rec["config_digest"] == config
    assert host_image_id(testbed, tag) == config

    # bytes_sent: the compressed size of the layers this push uploaded, from the manifest deployer read
    # back with the workstation's credentials (not the raw-size fallback)
    assert "could not read the manifest" not in err
    manifest = pushed_manifest(
        lambda ref: requests.get(f"http://{testbed.registry_auth}/v2/{tag.split(':')[0]}/manifests/{ref}", timeout=10,
                                 auth=testbed.registry_login(), headers={"Accept": MANIFEST_ACCEPT}).json(),
        "1", config)
    assert any(d["digest"] not in before for d in manifest["layers"])  # the fresh layer was uploaded
    assert pushed_layers_match(rec["bytes_sent"], manifest["layers"], before), (rec, manifest, before)

    # the password crossed no command line (the host's `docker pull` was seen, with no secret on it)
    assert watch.pulls, "the watch never saw the host's docker pull"
    assert watch.leaks == set()
    history = Path(testbed.hosts[HOST].staging_dir, "history.jsonl").read_text()
    assert any(json.loads(line).get("image") == tag for line in history.splitlines())
    logs = {p.name: p.read_text(errors="replace") for p in (Path(testbed.state) / "logs").glob("*.log")}
    for secret in secrets(testbed):
        assert secret not in err and secret not in json.dumps(out)
        assert secret not in history
        assert [name for name, text in logs.items() if secret in text] == []


def test_push_without_credentials_fails_and_says_to_log_in(testbed: Testbed, auth_env: dict[str, str],
                                                           host_login: None, fresh_image: tuple[Any, str],
                                                           tmp_path: Path) -> None:
    _image, tag = fresh_image
    empty = tmp_path / "no-login"
    empty.mkdir()
    code, out, err = deploy({**auth_env, "DOCKER_CONFIG": str(empty)}, "ship", "--host", HOST, "--via", "registry",
                            "--image", tag, "--json", "--lock-wait", "120")
    assert code == 1, err
    [rec] = [r for r in out if r["host"] == HOST]
    assert not rec["ok"] and rec["bytes_sent"] == 0
    assert f"pushing {testbed.registry_auth}/{tag} failed" in rec["error"]
    assert "docker login" in rec["hint"]
    assert "Traceback" not in err
    assert host_image_id(testbed, tag) is None


def test_a_host_without_its_own_login_cannot_pull(testbed: Testbed, auth_env: dict[str, str],
                                                  fresh_image: tuple[Any, str]) -> None:
    _image, tag = fresh_image
    code, out, err = deploy(auth_env, "ship", "--host", HOST, "--via", "registry", "--image", tag, "--json",
                            "--lock-wait", "120")
    assert code == 1, err
    [rec] = [r for r in out if r["host"] == HOST]
    assert not rec["ok"]
    assert f"docker pull {testbed.registry_auth}/{tag} failed on the host" in rec["error"]
    assert "no basic auth credentials" in rec["error"]
    assert "logged in if it needs auth" in rec["hint"] and "logged in if it needs auth" in err
    assert host_image_id(testbed, tag) is None
