"""Which local image a playbook deploy ships: a prebuilt ref, a fresh build, or (--no-build) the last build."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deployer.errors import LocalError
from deployer.local.build import GitRevision, git_revision, image_refs, split_ref
from deployer.playbook.model import BuildSpec, Playbook


@dataclass(frozen=True)
class ImageChoice:
    """What to ship. `build` set: build first (ref is known only afterwards)."""

    ref: str | None
    build: BuildSpec | None = None
    source: str = "playbook"  # playbook | --image | build | last build
    note: str | None = None  # said to the user (e.g. which older build --no-build picked)


def revision_of(spec: BuildSpec) -> GitRevision | None:
    """The git revision a build of spec would be tagged with (the same rule as local.build.build)."""
    dockerfile = os.path.abspath(os.path.join(spec.context, spec.dockerfile))
    outside = () if dockerfile.startswith(spec.context + os.sep) else (dockerfile,)
    return git_revision(spec.context, outside)


def build_candidates(spec: BuildSpec, revision: GitRevision | None) -> tuple[str, ...]:
    """Refs a build at this revision produces, the exact one first, then the repo's :latest (pure)."""
    assert spec.tag
    repo, explicit = split_ref(spec.tag)
    if explicit:
        return (spec.tag,)
    if revision is None:
        return (f"{repo}:latest",)  # without git the exact tag needs the image id
    return image_refs(spec.tag, revision)


def choose(playbook: Playbook, *, image_ref: str | None, no_build: bool,
           exists: Any = None) -> ImageChoice:
    """Decide the image without building. `exists(ref) -> bool` asks the local Docker (for --no-build)."""
    if image_ref:
        return ImageChoice(image_ref, source="--image")
    spec = playbook.image.build
    if spec is None:
        return ImageChoice(playbook.image.ref, source="playbook")
    if not no_build:
        return ImageChoice(None, build=spec, source="build")
    revision = revision_of(spec)
    candidates = build_candidates(spec, revision)
    found = first_existing(candidates, exists)
    if found is None:
        raise LocalError(f"--no-build: none of {', '.join(candidates)} is in the local Docker",
                         hint=f"build it first (deploy build -p {playbook.file}) or drop --no-build")
    return ImageChoice(found, source="last build", note=_note(found, candidates, revision))


def first_existing(candidates: Sequence[str], exists: Any) -> str | None:
    for ref in candidates:
        if exists(ref):
            return ref
    return None


def _note(found: str, candidates: Sequence[str], revision: GitRevision | None) -> str | None:
    if found != candidates[0]:
        return (f"not built at this revision ({candidates[0]} does not exist): using {found}, "
                "the last build; it may not hold your latest changes")
    if revision is not None and revision.dirty:
        return f"{found} was built from uncommitted changes earlier; it may not hold your latest edits"
    return None


def local_exists(client: Any) -> Any:
    """exists(ref) for the local Docker."""
    from deployer.local.image import exists

    return lambda ref: exists(client, ref)


def git_rev_label(client: Any, ref: str) -> str | None:
    """The deployer.git_rev (or OCI revision) label of a local image, if it has one."""
    from deployer.local.image import labels

    found = labels(client, ref, hint="build it first (deploy build, docker build) or check the name with `docker images`")
    rev = found.get("deployer.git_rev") or found.get("org.opencontainers.image.revision")
    return str(rev)[:40] if rev else None
