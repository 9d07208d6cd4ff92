"""Helpers (no tests) shared by the run/status integration tests: images on hosts, names, cleanup."""
from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

SAMPLE = "runs-it/sample:1"
BUSYBOX = "runs-it/busybox:1"
HOSTS = ("gpu01", "gpu02", "cpu01")


_SOURCES = {SAMPLE: "deployer-testbed/sample:latest", BUSYBOX: "deployer-testbed/busybox:latest"}
_saved: dict[str, tuple[str, bytes]] = {}


def ensure_image(testbed: Any, host: str, tag: str) -> None:
    """Put a test image on host directly (docker save | load, not `deploy ship`) unless it is there.

    Called right before each use: other suites share the testbed and may prune hosts' images."""
    import docker

    client = testbed.docker(host)
    try:
        client.images.get(tag)
        return
    except docker.errors.ImageNotFound:
        pass
    if tag not in _saved:
        image = testbed.docker("ws").images.get(_SOURCES[tag])
        _saved[tag] = (image.id, b"".join(image.save(named=False)))
    _, data = _saved[tag]
    # the loaded image's id is the host store's kind of id (config or manifest digest): tag what loaded
    [loaded] = client.images.load(data)
    repo, version = tag.split(":")
    loaded.tag(repo, version)


def load_images(testbed: Any, hosts: tuple[str, ...] = HOSTS) -> None:
    for host in hosts:
        for tag in _SOURCES:
            ensure_image(testbed, host, tag)


def unique(prefix: str) -> str:
    return f"rt-{prefix}-{os.getpid()}-{int(time.time() * 1000) % 10_000_000}"


def remove_containers(testbed: Any, names: list[str], hosts: tuple[str, ...] = HOSTS) -> None:
    for host in hosts:
        client = testbed.docker(host)
        for name in names:
            try:
                client.containers.get(name).remove(force=True)
            except Exception:  # noqa: BLE001 - already gone (or the testbed restarted)
                pass


def container(testbed: Any, host: str, name: str) -> Any | None:
    import docker

    try:
        return testbed.docker(host).containers.get(name)
    except docker.errors.NotFound:
        return None


def status_json(deploy_cli: Any, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    code, out, err = deploy_cli("status", "--json", *args)
    return code, json.loads(out or "[]"), err


def wait_for(fn: Any, timeout: float = 20.0, every: float = 0.3) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > end:
            return value
        time.sleep(every)


def run_cli(deploy_cli: Any, testbed: Any, *args: str, **kw: Any) -> tuple[int, str, str]:
    """`deploy run ARGS` after making sure the test image is on the named hosts."""
    opts = dict(itertools.pairwise(args))
    if opts.get("--image") in _SOURCES:
        for host in opts.get("--host", "").split(","):
            if host in testbed.hosts:
                ensure_image(testbed, host, opts["--image"])
    return deploy_cli("run", *args, **kw)

