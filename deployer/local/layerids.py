"""The layers of the workstation's images, by image id, so that looking for a ship's base inspects
only images it has not seen before.

An image id is a digest of content that names the image's layers (the config on the classic
store, the manifest on the containerd store): the layers of an id never change, on any daemon.
pulled_base (deployer.local.image) looks for a ship's base among every local image with a repo
digest, and every image pushed anywhere has one: inspecting each of them, one request at a time,
cost a re-ship 1.4 s on a workstation with fifty. Stored as JSON at
$XDG_CACHE_HOME/deployer/image-layers.json (default ~/.cache/deployer/image-layers.json); a
missing or corrupt file is empty, and ids no longer listed are dropped when it is written.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

MAX_IDS = 5000  # a bound on the file


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "deployer" / "image-layers.json"


def known(path: Path | None = None) -> dict[str, tuple[str, ...]]:
    """image id -> its layer diff ids, for the images inspected before."""
    try:
        data = json.loads((path or cache_path()).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {i: tuple(ls) for i, ls in data.items()
            if isinstance(i, str) and isinstance(ls, list) and ls and all(isinstance(d, str) for d in ls)}


def remember(learned: Mapping[str, Sequence[str]], listed: Collection[str], path: Path | None = None) -> None:
    """Add LEARNED (id -> layers) to what is known, keeping only ids still LISTED. Best effort: a
    cache that cannot be written only costs the next ship its inspects."""
    path = path or cache_path()
    kept = {i: list(ls) for i, ls in known(path).items() if i in listed}
    kept.update({i: list(ls) for i, ls in learned.items() if ls})
    if len(kept) > MAX_IDS:
        kept = dict(list(kept.items())[-MAX_IDS:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".image-layers.")
        with os.fdopen(fd, "w") as f:
            json.dump(kept, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except (OSError, UnboundLocalError):
            pass
