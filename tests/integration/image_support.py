"""Test images with fresh random layers, built on a real daemon, so which layers a host has is
under the test's control."""
from __future__ import annotations

import io
import uuid
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
