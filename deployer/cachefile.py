"""deployer's small JSON files under the user's cache dir ($XDG_CACHE_HOME/deployer, else
~/.cache/deployer): read whole (a missing or corrupt file is empty), replaced whole, atomically.

They are caches: what they say is re-checked where it matters, so losing one costs time only.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/deployer, else ~/.cache/deployer."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "deployer"


def read(path: Path) -> dict[str, Any]:
    """The file's JSON object; {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write(path: Path, data: dict[str, Any], *, compact: bool = False) -> None:
    """Replace the file with data at once: a reader sees the old file or the new, never a part.

    Callers serialise their read-change-write with a lock of their own (one writer per process).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.")
    try:
        with os.fdopen(fd, "w") as fh:
            if compact:
                json.dump(data, fh)
            else:
                json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
