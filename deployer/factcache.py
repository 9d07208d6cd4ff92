"""Facts from the last `deploy inventory check`, cached per machine (Host.machine) with a timestamp.

Stored as JSON at $XDG_CACHE_HOME/deployer/facts.json (default ~/.cache/deployer/facts.json);
`deploy inventory list` shows them. A missing or corrupt cache is simply empty.
"""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer import cachefile

if TYPE_CHECKING:
    from deployer.inventory.host import Host

_lock = threading.Lock()


def cache_path() -> Path:
    return cachefile.cache_dir() / "facts.json"


def load(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """Host.machine -> {"checked_at": iso time, "ok": bool, ...facts}."""
    return cachefile.read(path or cache_path())


def save(host: Host, facts: dict[str, Any], path: Path | None = None) -> None:
    """Record one host's facts (atomic replace; safe from parallel threads)."""
    path = path or cache_path()
    with _lock:
        data = load(path)
        data[host.machine] = {**facts, "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        cachefile.write(path, data)
