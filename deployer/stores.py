"""Which image store a Docker engine uses, from its `docker info` (pure; shared by both ends)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def image_store(info: Mapping[str, Any]) -> str:
    """'containerd' when Docker uses the containerd snapshotter image store, else its graph driver."""
    for pair in info.get("DriverStatus") or []:
        if (isinstance(pair, list | tuple) and len(pair) == 2 and pair[0] == "driver-type"
                and "io.containerd.snapshotter" in str(pair[1])):
            return "containerd"
    return str(info.get("Driver") or "unknown")
