"""Side effects on the testbed: reset hosts, check what arrived, uplink counters and throttling."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import docker

from . import digests
from .config import ROOT, TESTBED, UPLINK_IF, docker_socket, staging_dir


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


def image_digests(host: str, ref: str) -> tuple[str, str] | None:
    """(id, config digest) of ref in the host's Docker, or None. Only the config digest means the
    same image on every store (see digests.py)."""
    return digests.inspect(host_client(host), ref)


def content_blobs(host: str) -> int:
    """Blobs in a containerd-store host's content store (0 on the classic store)."""
    info = host_client(host).info()
    if digests.store_of(info) != "containerd":
        return 0
    root = digests.content_dir(info)
    return sum(1 for _ in root.glob("*/*")) if root.is_dir() else 0


def ws_store() -> str:
    """The workstation daemon's image store: 'containerd' or its storage driver ('overlay2')."""
    return digests.store_of(docker.from_env(timeout=60).info())


def switch_ws_store(store: str) -> None:
    """`scripts/testbed up --ws-store STORE`: restarts the workstation daemon (others notice)."""
    done = subprocess.run([str(ROOT / "scripts" / "testbed"), "up", "--ws-store", store], check=False,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/testbed up --ws-store {store} failed: {done.stderr.strip()[-1500:]}")


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


def forget_pushes(image_ids: list[str], keep: frozenset[str] = frozenset()) -> int:
    """Make the workstation daemon forget which registry repos already hold these layers.

    dockerd remembers every blob it pushed and, on the next push to any repo of that registry,
    mounts it from the old repo instead of uploading: a "first push" would then send nothing.
    On the classic store the memory is a per-layer file under <DockerRootDir>/image/<driver>/distribution/,
    read on every push, so deleting our layers' entries makes the next push a real one. On the
    containerd store it is a `containerd.io/distribution.source.<registry>` label on each content blob
    (layers by diff id, their compressed variants, config, manifests), which the push turns into a
    cross-repo mount: those labels are removed. Layers whose diff id is in KEEP are left alone.
    Returns entries removed.
    """
    cli = docker.from_env(timeout=120)
    info = cli.info()
    if digests.store_of(info) == "containerd":
        return _forget_content_sources(cli, info, image_ids, keep)
    dist = Path(info["DockerRootDir"]) / "image" / info["Driver"] / "distribution"
    removed = 0
    for image in image_ids:
        for diff_id in cli.images.get(image).attrs["RootFS"]["Layers"]:
            if diff_id in keep:
                continue
            algo, hexid = diff_id.split(":", 1)
            f = dist / "v2metadata-by-diffid" / algo / hexid
            if f.exists():
                f.unlink()
                removed += 1
    return removed


SOURCE_LABEL = "containerd.io/distribution.source."


def ctr() -> str:
    """containerd's CLI matching the testbed's Docker 28 (its cache), else whatever is on PATH."""
    cached = TESTBED / "cache" / "docker28" / "usr" / "bin" / "ctr"
    return str(cached) if cached.is_file() else (shutil.which("ctr") or "ctr")


def parse_content_ls(text: str) -> dict[str, dict[str, str]]:
    """`ctr content ls` -> {digest: labels} (pure). Columns: DIGEST SIZE AGE LABELS, tab-separated;
    labels are comma-separated key=value pairs or '-'."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines()[1:]:
        cols = [c for c in line.split("\t") if c]
        if not cols or not cols[0].startswith("sha256:"):
            continue
        labels: dict[str, str] = {}
        if len(cols) >= 4 and cols[-1] != "-":
            for pair in cols[-1].split(","):
                key, _, value = pair.partition("=")
                labels[key] = value
        out[cols[0]] = labels
    return out


def _forget_content_sources(cli: docker.DockerClient, info: dict, image_ids: list[str],
                            keep: frozenset[str] = frozenset()) -> int:
    address = (info.get("Containerd") or {}).get("Address")
    namespace = ((info.get("Containerd") or {}).get("Namespaces") or {}).get("Containers") or "moby"
    if not address:
        raise RuntimeError("the workstation daemon does not name its containerd (docker info: Containerd.Address)")
    base = [ctr(), "-a", address, "-n", namespace, "content"]
    listed = subprocess.run([*base, "ls"], check=True, capture_output=True, text=True, timeout=120).stdout
    content = parse_content_ls(listed)
    ours: set[str] = set()
    for image in image_ids:
        attrs = cli.api.inspect_image(image)
        ours.update(attrs["RootFS"]["Layers"])
        ours.add(str(attrs["Id"]))
    # The manifest (the id) names the config and the layers as stored; a push may add compressed
    # variants, which name their diff id in containerd.io/uncompressed.
    # (An index names its manifests the same way: walk down to the layers.)
    todo = list(ours)
    while todo:
        for ref in content.get(todo.pop(), {}).items():
            if ref[0].startswith("containerd.io/gc.ref.content.") and ref[1] not in ours:
                ours.add(ref[1])
                todo.append(ref[1])
    removed = 0
    for digest, labels in content.items():
        if digest not in ours and labels.get("containerd.io/uncompressed") not in ours:
            continue
        if digest in keep or labels.get("containerd.io/uncompressed") in keep:
            continue
        keys = [k for k in labels if k.startswith(SOURCE_LABEL)]
        if keys:
            subprocess.run([*base, "label", digest, *(f"{k}=" for k in keys)], check=True,
                           capture_output=True, text=True, timeout=60)
            removed += len(keys)
    return removed


def registry_route_ok() -> bool:
    """Whether forget_pushes can reach the daemon's push memory (same machine, readable root dir;
    containerd's CLI for the containerd store)."""
    try:
        info = docker.from_env(timeout=30).info()
    except docker.errors.DockerException:
        return False
    if digests.store_of(info) == "containerd":
        address = (info.get("Containerd") or {}).get("Address") or ""
        return Path(address).exists() and (Path(ctr()).is_file() or shutil.which("ctr") is not None)
    return (Path(info["DockerRootDir"]) / "image").is_dir()
