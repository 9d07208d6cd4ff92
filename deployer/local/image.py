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
    """One local image; diff_ids bottom to top.

    `id` is what the local Docker calls it (`docker images`): the config digest on the classic
    store, the manifest or index digest on the containerd store. `config_digest` is the same
    image on any store: the digest of its config, which names its layers by diff id."""

    ref: str
    id: str
    diff_ids: tuple[str, ...]
    size: int
    os: str
    architecture: str
    repo_tags: tuple[str, ...]
    config_digest: str = ""

    def __post_init__(self) -> None:
        if not self.config_digest:
            object.__setattr__(self, "config_digest", self.id)

    @property
    def id_hex(self) -> str:
        return self.id.split(":", 1)[-1]


def from_attrs(ref: str, attrs: Mapping[str, Any], config_digest: str = "") -> ImageInfo:
    """Build ImageInfo from `docker image inspect` JSON (pure)."""
    rootfs = attrs.get("RootFS") or {}
    return ImageInfo(
        config_digest=config_digest,
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
    if is_containerd(client):
        from deployer.local.content import config_digest

        info = from_attrs(ref, attrs)
        return from_attrs(ref, attrs, config_digest(client, info))
    return from_attrs(ref, attrs)


def is_containerd(client: docker.DockerClient) -> bool:
    """True when the local Docker keeps images in the containerd image store (asked once per client)."""
    known = getattr(client, "_deployer_store", None)
    if known is None and not callable(getattr(client, "info", None)):
        return False  # a stand-in client of a unit test
    if known is None:
        from deployer.stores import image_store

        with translated("reading docker info"):
            known = image_store(client.info())
        client._deployer_store = known  # type: ignore[attr-defined]
    return bool(known == "containerd")
