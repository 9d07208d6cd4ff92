"""Facts from the last `deploy inventory check`, cached per host with a timestamp.

Stored as JSON at $XDG_CACHE_HOME/deployer/facts.json (default ~/.cache/deployer/facts.json);
`deploy inventory list` shows them. A missing or corrupt cache is simply empty.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

_lock = threading.Lock()


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "deployer" / "facts.json"


def load(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """host name -> {"checked_at": iso time, "ok": bool, ...facts}."""
    path = path or cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save(host: str, facts: dict[str, Any], path: Path | None = None) -> None:
    """Record one host's facts (atomic replace; safe from parallel threads)."""
    path = path or cache_path()
    with _lock:
        data = load(path)
        data[host] = {**facts, "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".facts.")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
