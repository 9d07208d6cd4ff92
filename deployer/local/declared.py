"""The base images a BuildKit build declared (issue 19): the materials of the provenance that
`docker buildx build --metadata-file` writes, e.g. `pkg:docker/nvcr.io/nvidia/pytorch@24.01?platform=
linux%2Famd64` with the digest the build resolved. Kept per built image, so that a later ship finds
the base's registry even when the local image store does not list the base as a pulled image (a
docker-container builder, the containerd store, or a base removed since the build).

    materials(metadata) -> tuple[Material, ...]        pure
    pick_declared(diff_ids, bases) -> DeclaredBase      pure
    record(config_digest, materials); lookup(config_digest); settle(config_digest, base, checked)

Stored as JSON at $XDG_CACHE_HOME/deployer/bases.json (beside facts.json), keyed by the built
image's config digest: the same image on either image store. A missing or corrupt file is empty.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from deployer import cachefile

PROVENANCE_KEY = "buildx.build.provenance"  # also buildx.build.provenance/<platform> for several platforms
MAX_MATERIALS = 8  # a multi-stage build names each stage's base; more is not a Dockerfile we know
MAX_ENTRIES = 256
RETRY_S = 3600.0  # a registry that did not answer is asked again after this long, not on every ship
_lock = threading.Lock()


@dataclass(frozen=True)
class Material:
    """A registry image the build used: NAME as the Dockerfile wrote it (familiar: `busybox`,
    `nvcr.io/nvidia/pytorch`), the TAG it named, the DIGEST it resolved to (a manifest or an index)
    and the PLATFORM it took (`linux/amd64`, or "")."""

    name: str
    tag: str | None
    digest: str
    platform: str = ""


@dataclass(frozen=True)
class DeclaredBase:
    """A declared base as its registry describes it: pinned REF (repo@sha256 of the platform's
    manifest), its CONFIG digest and its layers' DIFF_IDS, bottom first."""

    ref: str
    config_digest: str
    diff_ids: tuple[str, ...]


@dataclass(frozen=True)
class Declared:
    """What the store knows of one built image: its materials and, once checked against the
    registry, its base (None: none of them is)."""

    materials: tuple[Material, ...]
    base: DeclaredBase | None = None
    checked: bool = False  # every material was looked up (a base or a firm no)
    tried_at: float = 0.0  # when a lookup last failed to finish (0: never)

    def due(self, now: float) -> bool:
        """True when the registry should be asked (again)."""
        return not self.checked and now - self.tried_at >= RETRY_S


def parse_purl(uri: str) -> tuple[str, str | None, str] | None:
    """(name, tag or None, platform) of a `pkg:docker/...` package URL; None for other kinds (pure)."""
    if not uri.startswith("pkg:docker/"):
        return None
    # split by hand: Python 3.10's urlsplit reads `10.213.0.5:5000/...` as a URL scheme
    rest = uri[len("pkg:docker/"):].split("#", 1)[0]
    whole, _, query = rest.partition("?")
    path, _, version = whole.rpartition("@")
    if not path:
        path, version = version, ""
    name = "/".join(unquote(seg) for seg in path.split("/"))
    version = unquote(version)
    tag = version if version and not version.startswith("sha256:") else None
    platform = unquote((parse_qs(query).get("platform") or [""])[0])
    return (name, tag, platform) if name else None


def materials(metadata: Mapping[str, Any]) -> tuple[Material, ...]:
    """The docker images a build's metadata file names as its provenance materials (pure)."""
    found: list[Material] = []
    for key, value in metadata.items():
        if not (key == PROVENANCE_KEY or key.startswith(PROVENANCE_KEY + "/")) or not isinstance(value, Mapping):
            continue
        for entry in value.get("materials") or ():
            if not isinstance(entry, Mapping) or not isinstance(entry.get("digest"), Mapping):
                continue
            parsed = parse_purl(str(entry.get("uri") or ""))
            hexdigest = str(entry["digest"].get("sha256") or "")
            if parsed is None or len(hexdigest) != 64:
                continue
            material = Material(parsed[0], parsed[1], f"sha256:{hexdigest}", parsed[2])
            if material not in found:
                found.append(material)
    return tuple(found[:MAX_MATERIALS])


def pick_declared(diff_ids: Sequence[str], bases: Sequence[DeclaredBase]) -> DeclaredBase | None:
    """The base that is the longest run of DIFF_IDS' bottom layers, shorter than all of them (pure)."""
    best: DeclaredBase | None = None
    for base in bases:
        n = len(base.diff_ids)
        if 0 < n < len(diff_ids) and tuple(diff_ids[:n]) == base.diff_ids and (best is None or n > len(best.diff_ids)):
            best = base
    return best


def store_path() -> Path:
    return cachefile.cache_dir() / "bases.json"


def _save(data: dict[str, Any], path: Path) -> None:
    if len(data) > MAX_ENTRIES:  # the oldest records go first
        keep = sorted(data, key=lambda k: float(data[k].get("recorded_at") or 0))[-MAX_ENTRIES:]
        data = {k: data[k] for k in keep}
    cachefile.write(path, data)


def record(config_digest: str, found: Sequence[Material], path: Path | None = None) -> None:
    """Remember what the build of the image with CONFIG_DIGEST declared (replacing an older record)."""
    path = path or store_path()
    with _lock:
        data = cachefile.read(path)
        data[config_digest] = {"materials": [asdict(m) for m in found], "recorded_at": time.time()}
        _save(data, path)


def lookup(config_digest: str, path: Path | None = None) -> Declared | None:
    """The record of the image with CONFIG_DIGEST; None when no build recorded one (or it is unreadable)."""
    entry = cachefile.read(path or store_path()).get(config_digest)
    if not isinstance(entry, dict):
        return None
    try:
        found = tuple(Material(str(m["name"]), m.get("tag"), str(m["digest"]), str(m.get("platform") or ""))
                      for m in entry.get("materials") or ())
        base = entry.get("base")
        return Declared(found, DeclaredBase(str(base["ref"]), str(base["config_digest"]), tuple(base["diff_ids"]))
                        if isinstance(base, dict) else None, bool(entry.get("checked")),
                        float(entry.get("tried_at") or 0))
    except (KeyError, TypeError, ValueError):
        return None


def settle(config_digest: str, base: DeclaredBase | None, checked: bool, path: Path | None = None) -> None:
    """Remember the registry's answer for the image's materials: its BASE if one is, and whether every
    material was looked up (CHECKED); an unfinished lookup is tried again after RETRY_S."""
    path = path or store_path()
    with _lock:
        data = cachefile.read(path)
        entry = data.get(config_digest)
        if not isinstance(entry, dict):
            return
        entry.update(checked=checked, tried_at=0 if checked else time.time())
        entry["base"] = {**asdict(base), "diff_ids": list(base.diff_ids)} if base else None
        _save(data, path)
