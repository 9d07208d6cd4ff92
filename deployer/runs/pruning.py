"""What `deploy prune` removes from a host, decided from what it holds (pure).

Per repository deployer shipped to the host (its history log's ship records), the newest `keep`
versions stay (newest by the last time each was shipped there), and so does any image a
container uses; older versions go. So do exited deployer containers older than the cutoff,
stand-in images left by this staging dir's unfinished ships, and the staging dir's leftovers.
Images deployer did not ship are never touched unless their repository is named (`repos`).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from deployer.commands.prune import Container, HostHoldings, Image
from deployer.commands.run import parse_time
from deployer.errors import SpecError
from deployer.refs import strip_domain

PARTIAL_LABEL = "io.deployer.partial"  # deployer.commands.load: a stand-in image's label (its staging dir)
STAGE_LABEL = "io.deployer.stage"  # deployer.local.stages: a stage image pulled ahead of a registry ship's image
FINISHED = ("exited", "dead")
# the inventory lists a relay's dir only when no ship through it started within a day
RELAY_COPIES = "a site relay's copies of unfinished ships (none through it for a day)"


@dataclass(frozen=True)
class Item:
    """One thing prune removes or keeps, and why."""

    kind: str  # image, container, stand-in, staging
    name: str  # tags, container name, or path in the staging dir
    refs: tuple[str, ...]  # what the remove command takes: tags or id, container id, path
    bytes: int
    reason: str


@dataclass(frozen=True)
class PrunePlan:
    remove: tuple[Item, ...]
    keep: tuple[Item, ...]

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.remove)


def repository(ref: str) -> str:
    """trainer:v3 -> trainer; reg:5000/ml/t:1 -> reg:5000/ml/t; t@sha256:… -> t."""
    ref = ref.split("@", 1)[0]
    return ref[:ref.rfind(":")] if ref.rfind(":") > ref.rfind("/") else ref


def same_repository(tag: str, repo: str) -> bool:
    """tag names repo, or repo on a registry (the registry route tags both); never another
    repository whose name merely ends the same (alice/notebook is not notebook)."""
    name = repository(tag)
    return name == repo or strip_domain(name) == strip_domain(repo)


def parse_duration(text: str) -> timedelta:
    """30s, 10m, 2h, 7d (or a combination, 1d12h) -> timedelta; SpecError otherwise."""
    parts = re.findall(r"(\d+)([smhd])", text or "")
    if not parts or "".join(n + u for n, u in parts) != text:
        raise SpecError(f"--older-than {text!r}: not a duration", hint="e.g. 30m, 12h, 7d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    return sum((timedelta(**{unit[u]: int(n)}) for n, u in parts), timedelta())


def _size(image: Image) -> int:
    return image.unique_size if image.unique_size is not None else image.size


def _old_containers(containers: Sequence[Container], cutoff: datetime) -> list[Container]:
    out = []
    for c in containers:
        finished = parse_time(c.finished_at)
        if c.managed and c.state in FINISHED and finished is not None and finished < cutoff:
            out.append(c)
    return out


def _shipped(h: HostHoldings) -> dict[str, dict[str, str]]:
    """repository -> image id -> the last time it was shipped to this host (ISO, sortable)."""
    out: dict[str, dict[str, str]] = {}
    for rec in h.records:
        image, image_id = rec.get("image"), rec.get("image_id")
        if rec.get("action") != "ship" or rec.get("result") != "ok" or not image or not image_id:
            continue
        seen = out.setdefault(repository(str(image)), {})
        seen[str(image_id)] = max(seen.get(str(image_id), ""), str(rec.get("time") or ""))
    return out


def plan(h: HostHoldings, *, keep: int, older_than: timedelta, now: datetime, staging: str,
         repos: Sequence[str] = ()) -> PrunePlan:
    """Everything to remove from the host, and the versions kept with the reason."""
    remove: list[Item] = []
    kept: dict[str, Item] = {}
    old = _old_containers(h.containers, now - older_than)
    remove += [Item("container", c.name, (c.id,), 0, f"exited deployer container, finished over {older_than} ago")
               for c in old]
    gone = {c.id for c in old}
    users: dict[str, list[str]] = {}
    for c in h.containers:
        if c.id not in gone:
            users.setdefault(c.image_id, []).append(c.name)
    shipped = _shipped(h)
    doomed: dict[str, Item] = {}
    for repo in [*shipped, *(r for r in repos if r not in shipped)]:
        when = shipped.get(repo, {})

        def version(img: Image, repo: str = repo, when: dict[str, str] = when) -> bool:
            if repo in repos:  # asked for: every image of it
                return any(same_repository(t, repo) for t in img.tags) or img.id in when
            return img.id in when and (not img.tags or any(same_repository(t, repo) for t in img.tags))

        versions = sorted((i for i in h.images if version(i)), key=lambda i: (when.get(i.id, ""), i.created),
                          reverse=True)
        for n, img in enumerate(versions):
            tags = ", ".join(img.tags) or img.id[:19]
            others = [t for t in img.tags if not same_repository(t, repo) and repository(t) not in repos]
            if n < keep:
                kept[img.id] = Item("image", tags, (), _size(img), f"one of the newest {keep} of {repo}")
            elif img.id in users:
                kept[img.id] = Item("image", tags, (), _size(img), f"in use by {', '.join(sorted(users[img.id]))}")
            elif others:
                kept[img.id] = Item("image", tags, (), _size(img), f"also tagged {', '.join(others)}")
            else:
                doomed[img.id] = Item("image", tags, img.tags or (img.id,), _size(img),
                                      f"older than the newest {keep} of {repo}")
    remove += [item for image_id, item in doomed.items() if image_id not in kept]
    remove += [Item("stand-in", i.id[:19], (i.id,), _size(i), "stand-in image of an unfinished ship")
               for i in h.images if i.label(PARTIAL_LABEL) == staging and i.id not in users]
    remove += [Item("stand-in", i.id[:19], (i.id,), _size(i), "stage image of an unfinished registry ship")
               for i in h.images if i.label(STAGE_LABEL) and i.id not in users]
    remove += [Item("staging", path, (path,), size, RELAY_COPIES if path == "relay" else
                    "staging leftover of an unfinished ship") for path, size in h.leftovers]
    return PrunePlan(tuple(remove), tuple(kept.values()))
