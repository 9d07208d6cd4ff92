"""Pure argv builders and parsers for `deploy prune`: what a host holds, and removing some of it.

One read-only round trip (inventory_argv) lists the host's history log, images (id, size, created,
tags, labels), Docker's unique size of each image, containers (id, name, image, state, finish
time, labels) and the staging dir's leftovers (blobs of unfinished ships, load heads, lock graves,
a site relay's copies when no ship through it may be running).
"""
from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from deployer.commands import sections

_SECTION = sections.MARKER

# $1 staging dir, then the docker command. Never fails: a missing part is an empty section.
_INVENTORY = (
    'staging=$1; shift\n'
    f'printf "\\n{_SECTION}history\\n"; cat -- "$staging/history.jsonl" 2>/dev/null; echo\n'
    f'printf "\\n{_SECTION}images\\n"\n'
    'ids=$("$@" image ls -q --no-trunc 2>/dev/null | sort -u)\n'
    '[ -n "$ids" ] && "$@" image inspect --format '
    '\'{"id":{{json .Id}},"size":{{json .Size}},"created":{{json .Created}},"tags":{{json .RepoTags}},'
    '"labels":{{json .Config.Labels}}}\' $ids 2>/dev/null\n'
    f'printf "\\n{_SECTION}sizes\\n"\n'
    '"$@" system df -v --format \'{{json .Images}}\' 2>/dev/null\n'
    f'printf "\\n{_SECTION}containers\\n"\n'
    'cids=$("$@" ps -aq --no-trunc 2>/dev/null)\n'
    '[ -n "$cids" ] && "$@" inspect --format '
    '\'{"id":{{json .Id}},"name":{{json .Name}},"image":{{json .Image}},"state":{{json .State.Status}},'
    '"finished_at":{{json .State.FinishedAt}},"labels":{{json .Config.Labels}}}\' $cids 2>/dev/null\n'
    f'printf "\\n{_SECTION}staging\\n"\n'
    # a dir that holds no file (the blob dir a finished ship emptied) is no leftover
    'cd -- "$staging" 2>/dev/null && for f in blobs load load-*.head lock.dead.* gpu-locks/.dead.*; do\n'
    '  [ -e "$f" ] && [ -n "$(find "$f" ! -type d 2>/dev/null | head -n 1)" ] &&\n'
    '    printf "%s %s\\n" "$(du -sk -- "$f" | cut -f1)" "$f"\n'
    'done\n'
    # a site relay's copies (and dead ships' key dirs), unless a ship through it may still run:
    # a ship's key dir lives from its setup to its end, and a day at most
    'r=$staging/relay\n'
    '[ -d "$r" ] && [ -z "$(find "$r" -maxdepth 1 -name "ship-*" -mmin -1440 2>/dev/null)" ] &&'
    ' printf "%s %s\\n" "$(du -sk -- "$r" | cut -f1)" relay\n'
    'exit 0'
)


def inventory_argv(staging: str, docker: Sequence[str]) -> tuple[str, ...]:
    """List what prune decides on (parse with parse_inventory)."""
    return ("sh", "-c", _INVENTORY, "sh", staging, *docker)


@dataclass(frozen=True)
class Image:
    id: str
    size: int
    created: str
    tags: tuple[str, ...]
    labels: tuple[tuple[str, str], ...] = ()
    unique_size: int | None = None  # Docker's "unique size": bytes only this image uses

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    image_id: str
    state: str
    finished_at: str | None
    managed: bool


@dataclass(frozen=True)
class HostHoldings:
    """What one host holds, as prune sees it."""

    records: tuple[dict[str, Any], ...]
    images: tuple[Image, ...]
    containers: tuple[Container, ...]
    leftovers: tuple[tuple[str, int], ...]  # (path relative to the staging dir, bytes)


_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15}
_HUMAN = re.compile(r"^\s*([0-9.]+)\s*([kmgtp]?b)\s*$", re.IGNORECASE)


def parse_human_size(text: str) -> int | None:
    """Docker's human sizes (units.HumanSize: decimal, e.g. 1.984MB, 512B, 12.3kB) -> bytes."""
    m = _HUMAN.match(text or "")
    if not m:
        return None
    return round(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _sections(stdout: str) -> dict[str, list[str]]:
    return {k: [line for line in v if line.strip()] for k, v in sections.split(stdout).items()}


def _objects(lines: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _labels(obj: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (obj.get("labels") or {}).items()))


def parse_inventory(stdout: str, parse_history: Callable[[str], list[dict[str, Any]]]) -> HostHoldings:
    """inventory_argv's output -> HostHoldings; parse_history reads the log's text (deployer.history.parse)."""
    sec = _sections(stdout)
    unique: dict[str, int] = {}
    for line in sec.get("sizes", []):
        try:
            rows = json.loads(line)
        except ValueError:
            continue
        for row in rows if isinstance(rows, list) else []:
            size = parse_human_size(str(row.get("UniqueSize") or ""))
            if isinstance(row, dict) and row.get("ID") and size is not None:
                unique[str(row["ID"])] = size
    images = tuple(Image(str(o.get("id")), int(o.get("size") or 0), str(o.get("created") or ""),
                         tuple(str(t) for t in o.get("tags") or () if t and not str(t).startswith("<none>")),
                         _labels(o), unique.get(str(o.get("id"))))
                   for o in _objects(sec.get("images", [])) if o.get("id"))
    containers = tuple(Container(str(o.get("id")), str(o.get("name") or "").lstrip("/"), str(o.get("image") or ""),
                                 str(o.get("state") or ""), str(o.get("finished_at") or "") or None,
                                 dict(_labels(o)).get("deployer.managed") == "true")
                       for o in _objects(sec.get("containers", [])) if o.get("id"))
    leftovers = []
    for line in sec.get("staging", []):
        kib, _, path = line.partition(" ")
        if kib.isdigit() and path:
            leftovers.append((path, int(kib) * 1024))
    return HostHoldings(tuple(parse_history("\n".join(sec.get("history", [])))), images, containers,
                        tuple(leftovers))


def rm_containers_argv(docker: Sequence[str], ids: Sequence[str]) -> tuple[str, ...]:
    return (*docker, "rm", "--", *ids)


def rmi_argv(docker: Sequence[str], refs: Sequence[str]) -> tuple[str, ...]:
    """Remove images by tag (the image goes with its last tag) or by id (an untagged one)."""
    return (*docker, "image", "rm", "--", *refs)


def remove_leftovers_argv(staging: str, paths: Sequence[str]) -> tuple[str, ...]:
    for p in paths:
        if p.startswith("/") or ".." in p.split("/"):
            raise ValueError(f"not a staging leftover: {p!r}")
    return ("rm", "-rf", "--", *(posixpath.join(staging, p) for p in paths))
