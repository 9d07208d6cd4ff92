"""What the local Docker knows about an image: id, layer diff IDs, size, platform, tags, history."""
from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import docker.errors

from deployer.errors import ImageNotFound
from deployer.local.client import Client, daemon_info, docker_client, translated

MISSING_HINT = "build it first (`docker build -t REF .`) or check the name with `docker images`"


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
    repo_digests: tuple[str, ...] = ()  # `repo@sha256:...`: the manifests it was pushed or pulled as

    @property
    def registry_ids(self) -> frozenset[str]:
        """The ids a containerd-store host may give this image when it pulled it from a registry:
        the digests of the manifests (or indexes) it was pushed or pulled as, and its own id when
        that is one (the local store is containerd's too)."""
        digests = {d.rpartition("@")[2] for d in self.repo_digests}
        if self.id != self.config_digest:
            digests.add(self.id)
        return frozenset(d for d in digests if d.startswith("sha256:"))

    def __post_init__(self) -> None:
        if not self.config_digest:
            object.__setattr__(self, "config_digest", self.id)

    @property
    def id_hex(self) -> str:
        return self.id.split(":", 1)[-1]

    @property
    def platform(self) -> str:
        """`os/architecture` as an index lists it; Docker leaves either out for some imported images
        (then linux, amd64: what it runs them as)."""
        return f"{self.os or 'linux'}/{self.architecture or 'amd64'}"


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
        repo_digests=tuple(attrs.get("RepoDigests") or ()),
    )


def inspect(ref: str, client: Client | None = None) -> ImageInfo:
    """Inspect a local image by reference or id; ImageNotFound (with a hint) when it is missing."""
    client = client or docker_client()
    attrs = inspect_attrs(client, ref)
    shown = store_shown(attrs)
    if shown is not None and getattr(client, "_deployer_store", None) is None:
        client._deployer_store = shown  # type: ignore[attr-defined]  # is_containerd need not ask docker info
    if is_containerd(client):
        from deployer.local.content import config_digest

        info = from_attrs(ref, attrs)
        return from_attrs(ref, attrs, config_digest(client, info))
    return from_attrs(ref, attrs)


def inspect_attrs(client: Client, ref: str, *, what: str | None = None,
                  hint: str = MISSING_HINT) -> dict[str, Any]:
    """`docker image inspect` JSON of a local image; ImageNotFound(ref, hint) when there is none."""
    with translated(what or f"inspecting image {ref}"):
        try:
            attrs: dict[str, Any] = client.api.inspect_image(ref)
        except docker.errors.NotFound as exc:
            raise ImageNotFound(ref, hint=hint) from exc
    return attrs


def exists(client: Client, ref: str) -> bool:
    """True when the local Docker has an image by this reference or id."""
    try:
        inspect_attrs(client, ref, what=f"looking up {ref}")
    except ImageNotFound:
        return False
    return True


def labels(client: Client, ref: str, hint: str = MISSING_HINT) -> dict[str, str]:
    """The labels of a local image ({} when it has none); ImageNotFound when it is missing."""
    return dict((inspect_attrs(client, ref, hint=hint).get("Config") or {}).get("Labels") or {})


def history_sizes(client: Client, image: ImageInfo) -> list[int]:
    """`docker history` sizes, oldest first (for the disk preflight's upper bounds)."""
    with translated(f"reading the history of {image.ref}"):
        entries = client.api.history(image.id)
    return [int(e.get("Size") or 0) for e in reversed(entries)]


def store_shown(attrs: dict[str, Any]) -> str | None:
    """The image store an image's inspect JSON shows, when it shows it (pure): the containerd
    store describes the image's manifest (Docker 28+); a classic overlay2 store names its graph
    driver, a name no containerd snapshotter has. Else None (`docker info` tells)."""
    if attrs.get("Descriptor"):
        return "containerd"
    if (attrs.get("GraphDriver") or {}).get("Name") == "overlay2":
        return "overlay2"
    return None


def is_containerd(client: Client) -> bool:
    """True when the local Docker keeps images in the containerd image store (asked once per client)."""
    known = getattr(client, "_deployer_store", None)
    if known is None and not callable(getattr(client, "info", None)):
        return False  # a stand-in client of a unit test
    if known is None:
        from deployer.stores import image_store

        with translated("reading docker info"):
            known = image_store(daemon_info(client))
        client._deployer_store = known  # type: ignore[attr-defined]
    return bool(known == "containerd")


@dataclass(frozen=True)
class PulledBase:
    """A local image pulled from a registry whose layers are the bottom of another image's."""

    repo_digest: str  # repo@sha256:..., as the registry names it: the base pinned by digest
    layers: int  # how many of the other image's bottom layers it is
    config_digest: str  # its config's digest (picks its manifest out of a multi-platform index)
    image_id: str = ""  # its id in the local Docker


def _layers(attrs: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple((attrs.get("RootFS") or {}).get("Layers") or ())


def pick_base(diff_ids: tuple[str, ...], candidates: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any], str] | None:
    """The candidate (`docker image inspect` JSON) that is the longest run of DIFF_IDS' bottom
    layers, shorter than all of them, and has a repo digest; with that digest (pure)."""
    best: tuple[Mapping[str, Any], str] | None = None
    best_n = 0
    for attrs in candidates:
        layers = _layers(attrs)
        digests = sorted(str(d) for d in attrs.get("RepoDigests") or () if "@sha256:" in str(d))
        if digests and best_n < len(layers) < len(diff_ids) and diff_ids[:len(layers)] == layers:
            best, best_n = (attrs, digests[0]), len(layers)
    return best


def _base_sizes(layer_sizes: Sequence[int], layers: int) -> set[int]:
    """The sizes a base of an image with these history sizes (and LAYERS layers) can have: the sum
    of a run of its bottom entries, short of the whole image when its top layer has a size (the
    whole image's size is that of every earlier build of it; a layer of size 0 can be the top)."""
    sums = set(itertools.accumulate(layer_sizes))
    if sum(1 for n in layer_sizes if n > 0) == layers:  # every layer has a size: the top one too
        sums.discard(sum(layer_sizes))
    return sums


def pulled_base(image: ImageInfo, client: Client, layer_sizes: Sequence[int] | None = None,
                known: Mapping[str, Sequence[str]] | None = None,
                learned: Callable[[dict[str, tuple[str, ...]], set[str]], None] | None = None) -> PulledBase | None:
    """The base IMAGE was built on, if the local Docker pulled it from a registry (it has a repo
    digest): the longest run of IMAGE's bottom layers that is such an image. The image itself does
    not count (the user's own layers go as shipping decides).

    LAYER_SIZES (history_sizes): on the classic store an image's size is the sum of its layers',
    so only an image whose size is that of a run of IMAGE's bottom layers is considered (every
    image pushed anywhere has a repo digest: inspecting them all cost a re-ship 60 ms). The layers
    of an image are known by its id (an id names its layers): KNOWN, the ids inspected before,
    are not inspected again, only new images and the one picked (afresh); LEARNED is given what
    was inspected, and the ids the local Docker lists now (the caller keeps them)."""
    with translated("listing local images"):
        summaries = client.api.images()
    sums = _base_sizes(layer_sizes, len(image.diff_ids)) if layer_sizes is not None and not is_containerd(client) else None
    known = known or {}
    inspected: dict[str, dict[str, Any]] = {}
    candidates = []
    for summary in summaries:
        image_id = str(summary.get("Id") or "")
        if summary.get("RepoDigests") and image_id != image.id and (sums is None or summary.get("Size") in sums):
            if image_id not in known:
                try:
                    inspected[image_id] = inspect_attrs(client, image_id, what="inspecting a base image")
                except ImageNotFound:
                    continue  # removed meanwhile
            layers = known.get(image_id) or _layers(inspected[image_id])
            candidates.append({"Id": image_id, "RootFS": {"Layers": list(layers)},
                               "RepoDigests": summary.get("RepoDigests")})
    if inspected and learned is not None:
        learned({i: _layers(a) for i, a in inspected.items()}, {str(s.get("Id")) for s in summaries})
    picked = pick_base(image.diff_ids, candidates)
    if picked is None:
        return None
    picked_id = str(picked[0]["Id"])
    return confirmed_base(image, client, picked_id, inspected.get(picked_id))


def confirmed_base(image: ImageInfo, client: Client, base_id: str,
                   attrs: Mapping[str, Any] | None = None) -> PulledBase | None:
    """The local image BASE_ID as IMAGE's base, as Docker describes it now (ATTRS: its inspect, if
    just read): None when it is gone, or is no longer a pulled run of IMAGE's bottom layers."""
    try:
        fresh = attrs or inspect_attrs(client, base_id, what="inspecting a base image")
    except ImageNotFound:
        return None  # removed meanwhile
    picked = pick_base(image.diff_ids, [fresh])
    if picked is None:
        return None
    attrs, repo_digest = picked
    config = str(attrs["Id"])
    if is_containerd(client):
        from deployer.local.content import config_digest

        config = config_digest(client, from_attrs(repo_digest, attrs))
    return PulledBase(repo_digest, len(_layers(attrs)), config, str(attrs["Id"]))
