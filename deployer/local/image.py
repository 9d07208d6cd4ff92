"""What the local Docker knows about an image: id, layer diff IDs, size, platform, tags."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from deployer.errors import LocalError
from deployer.local.client import docker_client, translated


@dataclass(frozen=True)
class ImageInfo:
    """One local image. `id` is the config digest ("sha256:..."); diff_ids bottom to top."""

    ref: str
    id: str
    diff_ids: tuple[str, ...]
    size: int
    os: str
    architecture: str
    repo_tags: tuple[str, ...]

    @property
    def id_hex(self) -> str:
        return self.id.split(":", 1)[-1]


def from_attrs(ref: str, attrs: Mapping[str, Any]) -> ImageInfo:
    """Build ImageInfo from `docker image inspect` JSON (pure)."""
    rootfs = attrs.get("RootFS") or {}
    return ImageInfo(
        ref=ref,
        id=str(attrs["Id"]),
        diff_ids=tuple(rootfs.get("Layers") or ()),
        size=int(attrs.get("Size") or 0),
        os=str(attrs.get("Os") or ""),
        architecture=str(attrs.get("Architecture") or ""),
        repo_tags=tuple(attrs.get("RepoTags") or ()),
    )


def inspect(ref: str, client: docker.DockerClient | None = None) -> ImageInfo:
    """Inspect a local image by reference or id; LocalError with a hint when it is missing."""
    client = client or docker_client()
    try:
        with translated(f"inspecting image {ref}"):
            attrs = client.api.inspect_image(ref)
    except LocalError as exc:
        if isinstance(exc.__cause__, docker.errors.NotFound):
            raise LocalError(
                f"image {ref} not found in the local Docker",
                hint="build it first (`docker build -t REF .`) or check the name with `docker images`",
            ) from exc.__cause__
        raise
    return from_attrs(ref, attrs)
