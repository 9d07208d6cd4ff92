"""Stage images: the lower layers of an image, pushed ahead of it so hosts pull them meanwhile.

`docker pull` cannot start before `docker push` puts the manifest, and that comes last: by hand,
every host waits for the whole push, then pulls every layer. deployer pushes first an image of
the image's bottom part of its bytes (a *stage*: the same layers, a config of its own), then the
next part, then the image itself; a host pulls each stage by digest as soon as it is pushed,
while the next layers go up, and the image's own pull finds most layers there already.

A stage is made on a classic-store workstation by `docker load`ing its config alone: the layer
store already holds each of its layers, so the load skips their files without opening them
(as on a host: DESIGN.md). Pure builders here; the load is the one call that touches Docker.
"""
from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from deployer.errors import LocalError
from deployer.local.client import Client, translated
from deployer.local.image import ImageInfo
from deployer.tarfmt import BLOCK, digest_of, layer_path, tar_member

log = logging.getLogger(__name__)

STAGE_LABEL = "io.deployer.stage"  # on a stage's config: the config digest of the image it leads up to
MIN_STAGE_BYTES = 64 << 20  # a stage this small saves less than its own push and pull cost
MAX_STAGES = 2  # each stage is one more push (and pull) of Docker's fixed cost, in sequence
STAGE_TAG = "deployer-stage"  # the tag stages are pushed under (one per repository, moved by each)


@dataclass(frozen=True)
class Stage:
    """The image's first `layers` layers under a config of their own (`config`, id `id`)."""

    layers: int
    config: bytes

    @property
    def id(self) -> str:
        return digest_of(self.config)


def cuts(sizes: Sequence[int], max_stages: int = MAX_STAGES, min_bytes: int = MIN_STAGE_BYTES) -> list[int]:
    """How many bottom layers each stage holds (pure): the image's bytes cut into up to
    MAX_STAGES + 1 parts of about equal size at layer boundaries, the image being the last part;
    a part smaller than MIN_BYTES is merged upwards, so a small image gets none."""
    total = sum(sizes)
    if total < 2 * min_bytes or len(sizes) < 2:
        return []
    parts = min(max_stages + 1, total // min_bytes)
    sums = list(itertools.accumulate(sizes))
    found: list[int] = []
    for i in range(1, parts):
        goal = total * i / parts
        k = min(range(1, len(sizes)), key=lambda n: abs(sums[n - 1] - goal))  # layers below the cut
        below = sums[found[-1] - 1] if found else 0
        if k not in found and sums[k - 1] - below >= min_bytes and total - sums[k - 1] >= min_bytes:
            found.append(k)
    return sorted(set(found))


def layer_sizes(history: Sequence[int], layers: int) -> list[int] | None:
    """Each layer's size from `docker history`'s sizes, oldest first (pure); None when they cannot
    be told apart from the entries that made no layer (a layer of size 0)."""
    sizes = [n for n in history if n > 0]
    return sizes if len(sizes) == layers else None


def plan(image: ImageInfo, sizes: Sequence[int] | None, pushed: Collection[str]) -> list[Stage]:
    """The stages to push ahead of IMAGE (pure): cut by the bytes of the layers not PUSHED to the
    registry before (none for a re-ship: its lower layers are there); SIZES: each layer's (None:
    unknown, no stages)."""
    if sizes is None or len(sizes) != len(image.diff_ids):
        return []
    upload = [0 if d in pushed else n for d, n in zip(image.diff_ids, sizes, strict=True)]
    return [stage(image.os, image.architecture, image.diff_ids, k, image.config_digest) for k in cuts(upload)]


def stage(os: str, architecture: str, diff_ids: Sequence[str], layers: int, of: str) -> Stage:
    """The stage of the first LAYERS of DIFF_IDS, for the image whose config digest is OF (pure)."""
    doc = {
        "architecture": architecture or "amd64",
        "config": {"Labels": {STAGE_LABEL: of}},
        "os": os or "linux",
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids[:layers])},
    }
    return Stage(layers, json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


def load_tar(stages: Sequence[Stage], diff_ids: Sequence[str]) -> bytes:
    """A `docker load` tar of STAGES that carries no layer file (pure): each layer is in the store."""
    manifest = [{"Config": f"{s.id[7:]}.json", "RepoTags": None, "Layers": [layer_path(d) for d in diff_ids[:s.layers]]}
                for s in stages]
    members = [tar_member("manifest.json", json.dumps(manifest, separators=(",", ":")).encode())]
    members += [tar_member(f"{s.id[7:]}.json", s.config) for s in stages]
    return b"".join(members) + bytes(2 * BLOCK)


def load(client: Client, stages: Sequence[Stage], diff_ids: Sequence[str]) -> None:
    """Load STAGES into the local Docker (a LocalError if it refuses, e.g. a layer it lacks)."""
    with translated("loading the stage images of the push"):
        for chunk in client.api.load_image(load_tar(stages, diff_ids)):
            if isinstance(chunk, dict) and (chunk.get("error") or chunk.get("errorDetail")):
                raise LocalError(f"loading the stage images of the push failed: {chunk.get('error') or chunk}")


def remove(client: Client, stage: Stage) -> None:
    """Remove a local stage image (its layers stay: the image holds them); a failure is only logged."""
    try:
        client.api.remove_image(stage.id, force=True)
    except Exception as exc:  # noqa: BLE001 - a leftover stand-in is harmless
        log.info("could not remove the stage image %s: %s", stage.id[:19], exc)
