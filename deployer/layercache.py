"""What each host's images were made of at its last listing, so a ship inspects only new images;
and each host's last probe, for a re-ship's light check (deployer.ship.recall).

An image id is a digest of the image's content: the layers of an id on a host never change. A
ship lists the host's image ids and inspects only the ids this file does not know for that host
(deployer.commands.layers); on the containerd store that listing was the slowest part of a
re-ship's first round trip. Stored as JSON at $XDG_CACHE_HOME/deployer/layers.json
(default ~/.cache/deployer/layers.json), per host address; a missing or corrupt file is empty.
An image listed without layers (the containerd store, content missing) is never remembered.
A host's probe is kept beside its images, under `probe <host key>`, with the time it ran.
The workstation's own images are kept the same way, under `local`: looking for a ship's base
(deployer.local.image.pulled_base) then inspects only the local images it has not seen before;
and the base it found, under `bases`, by the image's layers below its top one: a re-ship after a
code change (only the top layer new) checks that one image instead of listing them all.
And which scheme each insecure registry answered on (deployer.ship.registry_api).
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from deployer import cachefile
from deployer.commands.layers import Listing
from deployer.inventory.host import Host

MAX_IMAGES = 2000  # per host: a bound on the file and on the listing command's length
_lock = threading.Lock()

Layers = Mapping[str, Sequence[str]]


def cache_path() -> Path:
    return cachefile.cache_dir() / "layers.json"


def remembered(host: Host, path: Path | None = None) -> dict[str, tuple[str, ...]]:
    """image id -> its layers, for the images the host had at its last listing."""
    return _layers(cachefile.read(path or cache_path()).get(host.machine))


def _layers(entry: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(entry, dict):
        return {}
    return {i: tuple(ls) for i, ls in entry.items()
            if isinstance(ls, list) and ls and all(isinstance(d, str) for d in ls)}


def remember(host: Host, listing: Listing, known: Layers, path: Path | None = None) -> None:
    """Record the images the host has now: those inspected, and the known ones it still lists."""
    now = {i: list(ls) for i, ls in listing.layers.items() if ls}
    now.update({i: list(known[i]) for i in listing.known if known.get(i)})
    _store(host, lambda _old: now, path)


def add(host: Host, image_id: str, layers: Sequence[str], path: Path | None = None) -> None:
    """Record one image a ship just put on the host (the next re-ship's REF names it)."""
    if layers:
        _store(host, lambda old: {**old, image_id: list(layers)}, path)


LOCAL = "local"  # the workstation's images (no host key has this form)


def local_layers(path: Path | None = None) -> dict[str, tuple[str, ...]]:
    """image id -> its layers, for the local images inspected before."""
    return _layers(cachefile.read(path or cache_path()).get(LOCAL))


def remember_local(inspected: Layers, listed: Collection[str], path: Path | None = None) -> None:
    """Add the local images just INSPECTED, keeping only the known ids the local Docker still LISTED."""

    def images(data: dict[str, Any]) -> None:
        now = {i: list(ls) for i, ls in _layers(data.get(LOCAL)).items() if i in listed}
        now.update({i: list(ls) for i, ls in inspected.items() if ls})
        data[LOCAL] = dict(list(now.items())[-MAX_IMAGES:])

    _update(images, path)


BASES = "bases"  # the base found for an image's layers below its top one (deployer.ship.origin)
MAX_BASES = 50


def recalled_base(layers: Sequence[str], max_age_s: float, path: Path | None = None,
                  now: float | None = None) -> str | None:
    """The local image id last found to be the pulled base of an image with these LAYERS below its
    top one, if that was at most MAX_AGE_S ago."""
    bases = cachefile.read(path or cache_path()).get(BASES)
    entry = bases.get(_digest(layers)) if isinstance(bases, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("base"), str) or not _fresh(entry, max_age_s, now):
        return None
    return entry["base"] or None


def remember_base(layers: Sequence[str], base_id: str, path: Path | None = None, now: float | None = None) -> None:
    """Record BASE_ID as the pulled base of an image with these LAYERS below its top one."""

    key = _digest(layers)

    def bases(data: dict[str, Any]) -> None:
        old = data.get(BASES)
        kept = {k: e for k, e in old.items() if isinstance(e, dict) and k != key} if isinstance(old, dict) else {}
        kept[key] = {"at": time.time() if now is None else now, "base": base_id}  # last: the oldest go first
        data[BASES] = dict(list(kept.items())[-MAX_BASES:])

    _update(bases, path)


def remember_probe(host: Host, argv: Sequence[str], stdout: str, path: Path | None = None,
                   now: float | None = None) -> None:
    """Record the output of a ship's probe of HOST (deployer.commands.facts), with the time and
    its argv (what it asked: the staging dir, the registry, the docker command)."""
    entry = {"at": time.time() if now is None else now, "argv": _digest(argv), "stdout": stdout}
    _update(lambda data: data.update({f"probe {host.machine}": entry}), path)


def recalled_probe(host: Host, argv: Sequence[str], max_age_s: float, path: Path | None = None,
                   now: float | None = None) -> str | None:
    """The output of HOST's last recorded probe, if it ran at most MAX_AGE_S ago and asked what
    ARGV asks (another registry or staging dir in the inventory is probed anew)."""
    return recalled_probes([(host, argv)], max_age_s, path, now)[0]


def recalled_probes(asked: Sequence[tuple[Host, Sequence[str]]], max_age_s: float, path: Path | None = None,
                    now: float | None = None) -> list[str | None]:
    """recalled_probe of each (host, argv), from one read of the file."""
    data = cachefile.read(path or cache_path())
    found: list[str | None] = []
    for host, argv in asked:
        entry = data.get(f"probe {host.machine}")
        if isinstance(entry, dict) and isinstance(entry.get("stdout"), str) and entry.get("argv") == _digest(argv) \
                and _fresh(entry, max_age_s, now):
            found.append(entry["stdout"])
        else:
            found.append(None)
    return found


def remember_scheme(registry: str, scheme: str, path: Path | None = None) -> None:
    """Record that REGISTRY (`host:port`) answered on SCHEME ('http' or 'https') when last asked."""
    _update(lambda data: data.update({f"scheme {registry}": scheme}), path)


def recalled_scheme(registry: str, path: Path | None = None) -> str | None:
    """The scheme REGISTRY answered on when last asked, if known."""
    scheme = cachefile.read(path or cache_path()).get(f"scheme {registry}")
    return scheme if scheme in ("http", "https") else None


MAX_PULLS = 20  # per host: the incomplete pulls remembered


def note_pull(host: Host, docker: str, present: Sequence[str], complete: bool, path: Path | None = None,
              now: float | None = None) -> None:
    """Record how a registry pull on HOST (DOCKER: its Docker's version and engine id) ended, for an image of
    which the host had the PRESENT layers. Incomplete: remembered. Complete: the pulls remembered
    with only layers among PRESENT are forgotten (they did not make this one incomplete)."""
    key, have = f"pulls {host.machine}", set(present)

    def change(data: dict[str, Any]) -> None:
        old = [e for e in _entries(data, key) if isinstance(e.get("layers"), list)]
        kept = [e for e in old if not (complete and set(e["layers"]) <= have)]
        if not complete:
            kept.append({"at": time.time() if now is None else now, "docker": docker,
                         "layers": sorted(have)})
        if kept:
            data[key] = kept[-MAX_PULLS:]
        else:
            data.pop(key, None)

    _update(change, path)


def pull_incomplete(host: Host, docker: str, present: Sequence[str], max_age_s: float,
                    path: Path | None = None, now: float | None = None) -> bool:
    """True if a registry pull on HOST (at most MAX_AGE_S ago, on the same DOCKER) left an
    incomplete image while the host had only layers among PRESENT: one of them lacks the registry's
    blob there (Docker 28's containerd store, moby#49784), so a pull of an image with PRESENT would too."""
    have = set(present)
    return any(entry.get("docker") == docker and _fresh(entry, max_age_s, now) and isinstance(entry.get("layers"), list)
               and entry["layers"] and set(entry["layers"]) <= have
               for entry in _entries(cachefile.read(path or cache_path()), f"pulls {host.machine}"))


def _fresh(entry: Mapping[str, Any], max_age_s: float, now: float | None) -> bool:
    """ENTRY was recorded at most MAX_AGE_S ago (and not in the future: a clock that went back)."""
    at = entry.get("at")
    return isinstance(at, (int, float)) and 0 <= (time.time() if now is None else now) - at <= max_age_s


def _entries(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    entries = data.get(key)
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _digest(argv: Sequence[str]) -> str:
    return hashlib.sha256("\0".join(argv).encode(errors="surrogateescape")).hexdigest()


def _store(host: Host, update: Callable[[dict[str, list[str]]], dict[str, list[str]]],
           path: Path | None = None) -> None:
    def images(data: dict[str, Any]) -> None:
        old = data.get(host.machine)
        now = update(old if isinstance(old, dict) else {})
        data[host.machine] = dict(list(now.items())[-MAX_IMAGES:])

    _update(images, path)


def _update(change: Callable[[dict[str, Any]], object], path: Path | None = None) -> None:
    """Read the file, CHANGE the data in place, write it back atomically (one writer at a time)."""
    path = path or cache_path()
    with _lock:
        data = cachefile.read(path)
        change(data)
        try:
            cachefile.write(path, data, compact=True)
        except OSError:
            pass  # a cache: the next ship inspects every image again
