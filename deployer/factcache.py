"""Facts from the last `deploy inventory check`, cached per host with a timestamp.

Stored as JSON at $XDG_CACHE_HOME/deployer/facts.json (default ~/.cache/deployer/facts.json);
`deploy inventory list` shows them. A missing or corrupt cache is simply empty.
"""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deployer import cachefile

_lock = threading.Lock()


def cache_path() -> Path:
    return cachefile.cache_dir() / "facts.json"


def load(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """host name -> {"checked_at": iso time, "ok": bool, ...facts}."""
    return cachefile.read(path or cache_path())


def save(host: str, facts: dict[str, Any], path: Path | None = None) -> None:
    """Record one host's facts (atomic replace; safe from parallel threads)."""
    path = path or cache_path()
    with _lock:
        data = load(path)
        data[host] = {**facts, "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        cachefile.write(path, data)
