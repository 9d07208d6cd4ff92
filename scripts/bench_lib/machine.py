"""A description of the machine and software the figures were measured on."""
from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from .config import ADDRESSES, ROOT, TESTBED, docker_socket


def _out(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def loadavg() -> str:
    """1, 5 and 15 minute load averages: the 2 cores are shared, so this says how busy they were."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# A first ship's worth of blobs: a virtual disk's write cache takes 128 MiB in 0.1 s (1.5 GB/s),
# while 512 MiB and 1 GiB took 2 and 5 s on the same disk a minute later.
DISK_PROBE_MIB = 512


def disk_write_mbps(where: Path = TESTBED, mib: int = DISK_PROBE_MIB) -> float | None:
    """MB/s of writing MIB MiB to a file in WHERE (the disk every host's Docker and staging dir
    use) and fsyncing it. A containerd-store host fsyncs what a load writes to its content store,
    so a first ship to one runs at this disk's pace once the link is faster; on a shared virtual
    disk the pace changes from hour to hour. None when WHERE cannot be written."""
    path = where / f".bench-disk-probe-{os.getpid()}"
    chunk = b"\1" * (1 << 20)
    try:
        start = time.monotonic()
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        return round(mib * (1 << 20) / 1e6 / (time.monotonic() - start), 1)
    except OSError:
        return None
    finally:
        path.unlink(missing_ok=True)


def _meminfo_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return 0.0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _daemon(line: str) -> str:
    """'28.5.2 overlayfs [["driver-type","io.containerd.snapshotter.v1"]]' -> '28.5.2, containerd store'."""
    version, _, rest = line.partition(" ")
    driver, _, status = rest.partition(" ")
    store = "containerd" if "io.containerd.snapshotter.v1" in status else driver
    return f"{version}, {store} store" if version and driver else (line or "?")


def git_commit(rev: str = "HEAD") -> str:
    return _out(["git", "-C", str(ROOT), "rev-parse", "--short", rev])


def describe() -> dict[str, Any]:
    """nproc, RAM, kernel, CPU, Docker versions, tool versions, git commit, load and disk pace at start."""
    fmt = "{{.ServerVersion}} {{.Driver}} {{json .DriverStatus}}"
    host_daemons = {h: _daemon(_out(["docker", "-H", docker_socket(h), "info", "--format", fmt]))
                    for h in ADDRESSES}
    return {
        "nproc": os.cpu_count(),
        "ram_gib": _meminfo_gib(),
        "kernel": platform.release(),
        "cpu": _cpu_model(),
        "docker_client": _out(["docker", "version", "--format", "{{.Client.Version}}"]),
        "docker_workstation_daemon": _daemon(_out(["docker", "info", "--format", fmt])),
        "docker_host_daemons": host_daemons,
        "openssh": _out(["ssh", "-V"]) or subprocess.run(["ssh", "-V"], check=False, capture_output=True,
                                                        text=True).stderr.strip(),
        "zstd": _out(["zstd", "--version"]),
        "gzip": _out(["gzip", "--version"]).splitlines()[0] if _out(["gzip", "--version"]) else "?",
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "loadavg": loadavg(),
        "disk_write_mbps": disk_write_mbps(),
    }
