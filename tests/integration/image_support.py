"""Test images with fresh random layers, built on a real daemon, so which layers a host has is
under the test's control."""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker

BUSYBOX = "deployer-testbed/busybox:latest"


def build_random(client: docker.DockerClient, tag: str, sizes: list[int], base: str = BUSYBOX) -> Any:
    """Build `tag` FROM base with a unique marker layer and one random layer per size (bytes)."""
    lines = [f"FROM {base}", f"RUN echo {uuid.uuid4().hex} > /id-{uuid.uuid4().hex[:8]}"]
    lines += [f"RUN head -c {n} /dev/urandom > /blob{i}" for i, n in enumerate(sizes)]
    image, _ = client.images.build(fileobj=io.BytesIO("\n".join(lines).encode()), tag=tag, rm=True, nocache=True)
    return image


def scratch_image(client: docker.DockerClient, ref: str, size: int, base: str = "scratch") -> Any:
    """BASE plus one fresh layer of SIZE random bytes; FROM scratch, an image of that layer only: no
    host has any of its layers, so a pull of it is complete on any store (Docker 28's containerd
    store skips layers it has from a load)."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", f"FROM {base}\nCOPY blob /blob\n".encode()), ("blob", os.urandom(size))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    image, _ = client.images.build(fileobj=context, custom_context=True, tag=ref, rm=True)
    return image


def remove_image(client: docker.DockerClient, ref: str) -> None:
    """Remove ref (forced); absent is fine."""
    try:
        client.images.remove(ref, force=True)
    except docker.errors.NotFound:
        pass


def forget_shipped(testbed: Any, tag: str, hosts: Sequence[str]) -> None:
    """Remove TAG and its registry name (as a registry ship leaves them) from the workstation and HOSTS."""
    for name in ("ws", *hosts):
        remove_image(testbed.docker(name), tag)
        remove_image(testbed.docker(name), f"{testbed.registry}/{tag}")


def pushed_layers_match(bytes_sent: int, layers: list[dict[str, Any]], stored_before: set[str]) -> bool:
    """True when bytes_sent is the compressed size of some of the manifest's LAYERS, including every
    one the registry did not hold before the push.

    Layers it already held may travel too: a daemon that forgot it pushed a blob (its push metadata
    gone, e.g. after scripts/bench) uploads it again and the registry keeps one copy, so storage
    alone cannot tell whether they crossed the wire."""
    must = sum(d["size"] for d in layers if d["digest"] not in stored_before)
    optional = [d["size"] for d in layers if d["digest"] in stored_before]
    return any(must + sum(combo) == bytes_sent
               for k in range(len(optional) + 1) for combo in itertools.combinations(optional, k))


def registry_blobs(registry_dir: Path) -> set[str]:
    """Digests of every blob in a testbed registry's filesystem storage (none before its first push)."""
    data = registry_dir / "data"
    assert data.is_dir(), f"registry storage not found at {data}"
    root = data / "docker" / "registry" / "v2" / "blobs" / "sha256"
    return {f"sha256:{p.name}" for p in root.glob("*/*") if (p / "data").is_file()}


_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


def config_digest_of(client: docker.DockerClient, ref: str) -> str | None:
    """The config digest of the image REF names on a daemon of either image store (None: absent).

    It is the image id on the classic store. On the containerd store the id is the manifest's (or
    index's) digest, so the manifest is read from the daemon's content store on disk (testbed
    daemons live on this machine) and every blob on the way is checked against its digest."""
    try:
        attrs = client.api.inspect_image(ref)
    except docker.errors.NotFound:
        return None
    if not attrs.get("Descriptor"):
        return str(attrs["Id"])
    root = Path(client.info()["DockerRootDir"]) / "containerd/daemon/io.containerd.content.v1.content/blobs/sha256"

    def read(digest: str) -> dict[str, Any]:
        data = (root / digest.split(":", 1)[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, f"{digest} is corrupt"
        return dict(json.loads(data))

    doc = read(str(attrs["Id"]))
    if doc.get("mediaType") in _INDEX_TYPES:
        platform = {"os": attrs.get("Os"), "architecture": attrs.get("Architecture")}
        [desc] = [m for m in doc["manifests"]
                  if {k: (m.get("platform") or {}).get(k) for k in platform} == platform]
        doc = read(desc["digest"])
    config = read(doc["config"]["digest"])
    layers = (attrs.get("RootFS") or {}).get("Layers")
    assert layers, f"{ref} is incomplete on this daemon: its content store lacks blobs (inspect shows no layers)"
    assert config["rootfs"]["diff_ids"] == layers
    return str(doc["config"]["digest"])


# What a registry may hold for a pushed image: a Docker v2 manifest (classic store), an OCI manifest,
# or an index naming one (a containerd-store workstation pushes its own).
MANIFEST_ACCEPT = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"))


def pushed_manifest(get: Any, ref: str, config_digest: str) -> dict[str, Any]:
    """The image manifest a registry holds at REF (GET(ref) -> JSON); for an index, its child whose
    config is CONFIG_DIGEST."""
    doc = dict(get(ref))
    if "layers" in doc:
        return doc
    for child in doc.get("manifests") or []:
        found = dict(get(child["digest"]))
        if (found.get("config") or {}).get("digest") == config_digest and "layers" in found:
            return found
    raise AssertionError(f"{ref} names no manifest for config {config_digest}")


def partials(blobs: Path) -> set[Path]:
    """The blobs still arriving in a host's staging BLOBS dir (none if it does not exist yet)."""
    return set(blobs.glob("*.partial"))


def partial_sizes(blobs: Path, but: Collection[Path] = ()) -> list[int]:
    """The sizes of the blobs still arriving in a host's staging BLOBS dir, BUT those (an earlier
    run's, from partials()). A blob that completed (renamed) or was removed since the listing is skipped."""
    sizes = []
    for p in partials(blobs) - set(but):
        try:
            sizes.append(p.stat().st_size)
        except FileNotFoundError:
            continue
    return sizes


def staged(proc: subprocess.Popen[Any], blobs: Mapping[str, Path], at_least: int,
           but: Mapping[str, Collection[Path]], pause: Callable[[], object] = lambda: time.sleep(0.05)) -> dict[str, int]:
    """Wait (60 s at most, while PROC, a ship, runs) until every host's BLOBS dir holds a partial
    blob of AT_LEAST bytes, BUT those (each host's earlier parts); each host's largest part."""
    deadline = time.monotonic() + 60
    got = dict.fromkeys(blobs, 0)
    while min(got.values()) < at_least and time.monotonic() < deadline and proc.poll() is None:
        got = {name: max(partial_sizes(path, but=but.get(name, ())), default=0) for name, path in blobs.items()}
        pause()
    return got


def stop(proc: subprocess.Popen[str], signum: int, timeout: float = 60) -> tuple[str, str, float]:
    """Send PROC SIGNUM, as a terminal or a CI job would: its stdout, its stderr, and the seconds it took to end."""
    sent = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=timeout)
    return out, err, time.monotonic() - sent
