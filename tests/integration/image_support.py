"""Test images with fresh random layers, built on a real daemon, so which layers a host has is
under the test's control."""
from __future__ import annotations

import io
import itertools
import uuid
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


def remove_image(client: docker.DockerClient, ref: str) -> None:
    """Remove ref (forced); absent is fine."""
    try:
        client.images.remove(ref, force=True)
    except docker.errors.NotFound:
        pass


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
