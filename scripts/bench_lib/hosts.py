"""Side effects on the testbed: reset hosts, check what arrived, uplink counters and throttling."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import docker

from .config import ROOT, UPLINK_IF, docker_socket, staging_dir


def host_client(host: str) -> docker.DockerClient:
    """The host's own dockerd, through its socket on this machine's filesystem."""
    return docker.DockerClient(base_url=docker_socket(host), timeout=600)


def reset(host: str) -> int:
    """Remove every image from the host's Docker and empty its staging dir; returns images removed.

    Stopped containers pin their images, so they go too; running ones belong to someone else's
    test and are left alone (their images then stay, and the first ship is not quite from zero).
    """
    cli = host_client(host)
    for status in ("exited", "created", "dead"):
        for c in cli.containers.list(all=True, filters={"status": status}):
            try:
                c.remove(force=True)
            except docker.errors.APIError as exc:  # gone already, or another test removes it right now
                if exc.status_code not in (404, 409):
                    raise
    removed = 0
    # Untag every tag, then delete what is left by id: `docker rmi` of an id with several tags fails.
    for img in cli.images.list(all=True):
        for ref in img.tags or [img.id]:
            try:
                cli.images.remove(ref, force=True, noprune=False)
                removed += 1
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: in use by a running container, or being removed
                    raise
    cli.images.prune(filters={"dangling": False})
    stage = staging_dir(host)
    if stage.is_dir():
        for child in stage.iterdir():
            # The history log is other tools' record, not ship state: keep it.
            if child.name == "history.jsonl":
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    return removed


def layer_count(host: str) -> int:
    """Distinct layers the host's Docker holds (0 after a clean reset)."""
    layers: set[str] = set()
    for img in host_client(host).images.list(all=True):
        layers.update(img.attrs.get("RootFS", {}).get("Layers", []))
    return len(layers)


def image_id(host: str, ref: str) -> str | None:
    """The id of ref in the host's Docker, or None."""
    try:
        return str(host_client(host).images.get(ref).id)
    except docker.errors.ImageNotFound:
        return None


def uplink_bytes() -> int:
    """tx + rx bytes so far on the uplink that every workstation-to-site byte crosses."""
    base = Path("/sys/class/net") / UPLINK_IF / "statistics"
    return int((base / "tx_bytes").read_text()) + int((base / "rx_bytes").read_text())


_throttled: list[str | None] = ["unknown"]


QUIET_BPS = 100_000  # below this the uplink counts as idle (ssh keepalives, other tests' chatter)


def wait_quiet(window: float, max_wait: float = 30.0) -> float:
    """Wait until the uplink carried < QUIET_BPS over `window` seconds (other helpers' tests share it);
    returns the last window's rate in bytes/s, which may still be high after max_wait."""
    deadline = time.monotonic() + max_wait
    while True:
        before = uplink_bytes()
        time.sleep(window)
        rate = (uplink_bytes() - before) / window
        if rate < QUIET_BPS or time.monotonic() >= deadline:
            return rate


def throttle(rate: str | None, force: bool = False) -> None:
    """Throttle the uplink to rate (tc syntax) or lift the limit (None); skipped when already so."""
    if not force and _throttled[0] == rate:
        return
    done = subprocess.run([str(ROOT / "scripts" / "testbed"), "throttle", "uplink", rate or "off"],
                          check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        _throttled[0] = "unknown"
        raise RuntimeError(f"scripts/testbed throttle uplink {rate or 'off'} failed: {done.stderr.strip()}")
    _throttled[0] = rate


def forget_pushes(image_ids: list[str]) -> int:
    """Make the workstation daemon forget which registry repos already hold these layers.

    dockerd remembers every blob it pushed and, on the next push to any repo of that registry,
    mounts it from the old repo instead of uploading: a "first push" would then send nothing.
    The memory is a per-layer file under <DockerRootDir>/image/<driver>/distribution/, read on
    every push, so deleting our layers' entries makes the next push a real one. Returns files removed.
    """
    cli = docker.from_env(timeout=120)
    info = cli.info()
    dist = Path(info["DockerRootDir"]) / "image" / info["Driver"] / "distribution"
    removed = 0
    for image in image_ids:
        for diff_id in cli.images.get(image).attrs["RootFS"]["Layers"]:
            algo, hexid = diff_id.split(":", 1)
            f = dist / "v2metadata-by-diffid" / algo / hexid
            if f.exists():
                f.unlink()
                removed += 1
    return removed


def registry_route_ok() -> bool:
    """Whether forget_pushes can reach the daemon's metadata (same machine, readable root dir)."""
    try:
        info = docker.from_env(timeout=30).info()
    except docker.errors.DockerException:
        return False
    return (Path(info["DockerRootDir"]) / "image").is_dir()
