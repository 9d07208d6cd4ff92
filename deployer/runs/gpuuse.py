"""Who uses which GPU on a host: deployer containers holding it, or load nvidia-smi sees (pure).

A GPU is free when no running deployer container holds it and nvidia-smi shows it idle: memory
used and utilization under the Busy thresholds. Load on a GPU no deployer container holds is
another process's (a job started by hand, another tool).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deployer.commands.run import ContainerStatus

HOLDING_STATES = ("running", "restarting", "paused")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else default


@dataclass(frozen=True)
class Busy:
    """When nvidia-smi's numbers mean a GPU is in use. An idle data-centre GPU shows a few MiB and 0 %;
    a CUDA context alone takes several hundred MiB, so 1 GiB or 10 % means someone computes there."""

    memory_mib: int = 1024
    util_pct: int = 10

    @classmethod
    def default(cls) -> Busy:
        """The thresholds, with DEPLOYER_GPU_BUSY_MEMORY_MIB / DEPLOYER_GPU_BUSY_UTIL_PCT overriding them."""
        return cls(_env_int("DEPLOYER_GPU_BUSY_MEMORY_MIB", cls.memory_mib),
                   _env_int("DEPLOYER_GPU_BUSY_UTIL_PCT", cls.util_pct))

    def loaded(self, memory_used_mib: int | None, utilization_pct: int | None) -> bool:
        return ((memory_used_mib or 0) >= self.memory_mib) or ((utilization_pct or 0) >= self.util_pct)


@dataclass(frozen=True)
class GpuUse:
    """One GPU of a host and who uses it."""

    index: int
    uuid: str
    name: str
    memory_used_mib: int | None
    memory_total_mib: int
    utilization_pct: int | None
    held_by: tuple[str, ...] = ()  # running deployer containers given this GPU
    loaded: bool = False  # nvidia-smi shows memory or utilization over the Busy thresholds

    @property
    def other_process(self) -> bool:
        """Load that no deployer container explains."""
        return self.loaded and not self.held_by

    @property
    def free(self) -> bool:
        return not self.held_by and not self.loaded

    def why_not_free(self) -> str:
        if self.held_by:
            return f"held by {', '.join(self.held_by)}"
        if self.loaded:
            used = "?" if self.memory_used_mib is None else self.memory_used_mib
            util = "?" if self.utilization_pct is None else self.utilization_pct
            return f"busy ({used} MiB, {util} %) with a process deployer did not start"
        return "free"

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "uuid": self.uuid, "name": self.name,
                "memory_used_mib": self.memory_used_mib, "memory_total_mib": self.memory_total_mib,
                "utilization_pct": self.utilization_pct, "held_by": list(self.held_by),
                "other_process": self.other_process, "free": self.free}


def indexes_of(container_gpus: Sequence[str], gpus: Sequence[Any]) -> list[int]:
    """The host GPU indexes a container's request names ("all", "1", "GPU-<uuid>"); unknown ids are left out."""
    by_uuid = {str(g.uuid): int(g.index) for g in gpus}
    known = [int(g.index) for g in gpus]
    out: list[int] = []
    for item in container_gpus:
        if item == "all":
            out += known
        elif item.isdigit() and int(item) in known:
            out.append(int(item))
        elif item in by_uuid:
            out.append(by_uuid[item])
    return sorted(set(out))


def holders(containers: Sequence[ContainerStatus], gpus: Sequence[Any]) -> dict[int, tuple[str, ...]]:
    """GPU index -> names of the running deployer containers given it."""
    out: dict[int, list[str]] = {}
    for c in containers:
        if c.state not in HOLDING_STATES or not c.gpus or not c.managed:
            continue
        for index in indexes_of(c.gpus, gpus):
            out.setdefault(index, []).append(c.name)
    return {i: tuple(sorted(names)) for i, names in out.items()}


def gpu_use(gpus: Sequence[Any], containers: Sequence[ContainerStatus], busy: Busy | None = None) -> tuple[GpuUse, ...]:
    """Every GPU (facts.Gpu objects) with its holders and load."""
    busy = busy or Busy.default()
    held = holders(containers, gpus)
    return tuple(GpuUse(int(g.index), str(g.uuid), str(g.name), g.memory_used_mib, int(g.memory_total_mib),
                        g.utilization_pct, held.get(int(g.index), ()),
                        busy.loaded(g.memory_used_mib, g.utilization_pct))
                 for g in gpus)
